"""Turn a feature table into arrays the pipeline can learn from, refusing bad input clearly.

A table has one id column, one label column and numeric feature columns (any other
column must be named in ``exclude``). Checks, each a one-line :class:`InputError` or a
logged fallback recorded in ``Table.notes``:

* id or label column missing, label empty for some rows, label constant -> error;
* non-numeric feature columns -> error naming them (booleans count as 0/1);
* +-inf values -> treated as missing (imputed inside the pipeline), logged;
* all-missing columns -> dropped by the imputer inside the pipeline, logged;
* duplicate ids -> rows of one patient: cross-validation keeps them in one fold and the
  bootstrap resamples patients; the same id with different labels -> error.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config.checks import show
from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Table:
    X: np.ndarray  # float64, missing = NaN
    y: np.ndarray  # int codes into ``classes``
    classes: np.ndarray  # original label values, sorted
    ids: np.ndarray  # patient id per row (str)
    features: list[str]
    name: str = "table"
    notes: list[str] = field(default_factory=list)

    def subset(self, mask: np.ndarray) -> "Table":
        return Table(self.X[mask], self.y[mask], self.classes, self.ids[mask], self.features, self.name, self.notes)

    @property
    def has_groups(self) -> bool:
        return len(np.unique(self.ids)) < len(self.ids)


def _names(cols, limit: int = 5) -> str:
    cols = [str(c) for c in cols]
    return ", ".join(cols[:limit]) + (f" (+{len(cols) - limit} more)" if len(cols) > limit else "")


def normalise_labels(values: pd.Series) -> pd.Series:
    """Integral floats (1.0) become ints so 1 and 1.0 are one class; strings stay strings."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        v = values.to_numpy(dtype=float)
        if np.all(np.isfinite(v)) and np.all(v == np.round(v)):
            return pd.Series(v.astype(np.int64), index=values.index, name=values.name)
        return values
    return values.astype(str)


def feature_matrix(df: pd.DataFrame, features: list[str], where: str) -> tuple[np.ndarray, list[str]]:
    """Numeric matrix of ``features`` (inf -> NaN); error on non-numeric columns."""
    frame = df[features]
    bad = [c for c in features if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if bad:
        example = frame[bad[0]].dropna().astype(str).head(1).tolist()
        raise InputError(f"Feature table '{where}' has non-numeric feature column(s) {_names(bad)} "
                         f"(e.g. {example[0]!r} in '{bad[0]}'); encode them as numbers or remove them."
                         if example else
                         f"Feature table '{where}' has non-numeric feature column(s) {_names(bad)}; "
                         "encode them as numbers or remove them.")
    X = np.array(frame.to_numpy(dtype=float, na_value=np.nan), dtype=float)  # writable copy
    notes = []
    inf = ~np.isfinite(X) & ~np.isnan(X)
    if inf.any():
        cols = [features[j] for j in np.where(inf.any(axis=0))[0]]
        notes.append(f"{int(inf.sum())} infinite value(s) in {_names(cols)} treated as missing and imputed")
        X[inf] = np.nan
    return X, notes


def load_table(df: pd.DataFrame, id_column: str, label_column: str, exclude: tuple[str, ...] = (),
               where: str = "table") -> Table:
    """Validate ``df`` and return a :class:`Table` (labels encoded as 0..C-1 over sorted values)."""
    cols = [str(c) for c in df.columns]
    df = df.copy()
    df.columns = cols
    for role, col in (("id", id_column), ("label", label_column)):
        if col not in cols:
            raise InputError(f"Feature table '{where}' has no {role} column '{col}' (columns: {_names(cols, 8)}); "
                             f"pass the right --{role}-column.")
    if df[label_column].isna().any():
        ids = df.loc[df[label_column].isna(), id_column].astype(str).tolist()
        raise InputError(f"Feature table '{where}': label '{label_column}' is empty for {len(ids)} row(s) "
                         f"(e.g. case '{ids[0]}'); fill the labels or remove those rows.")
    labels = normalise_labels(df[label_column])
    ids = df[id_column].astype(str).str.strip().to_numpy()
    if len(labels.unique()) < 2:
        raise InputError(f"Feature table '{where}': label '{label_column}' is constant ({show(labels.iloc[0])} for all "
                         f"{len(df)} rows); a classifier needs at least two classes.")
    features = [c for c in cols if c not in (id_column, label_column, *exclude)]
    if not features:
        raise InputError(f"Feature table '{where}' has no feature columns besides '{id_column}' and "
                         f"'{label_column}'; add numeric feature columns.")
    X, notes = feature_matrix(df, features, where)
    empty = [features[j] for j in np.where(np.isnan(X).all(axis=0))[0]]
    if empty:
        notes.append(f"{len(empty)} all-missing column(s) dropped: {_names(empty)}")
    if np.isnan(X).any():
        notes.append(f"{int(np.isnan(X).sum())} missing value(s) imputed with the training-fold median")
    if len(np.unique(ids)) < len(ids):
        per_id = pd.Series(labels.to_numpy()).groupby(ids).nunique()
        if (per_id > 1).any():
            pid = per_id[per_id > 1].index[0]
            raise InputError(f"Feature table '{where}': id '{pid}' appears with different labels; "
                             "one patient must have one label - fix the id or the label column.")
        n_dup = len(ids) - len(np.unique(ids))
        notes.append(f"{n_dup} repeated id row(s): rows of one patient are kept in one fold and resampled together")
    classes, y = np.unique(labels.to_numpy(), return_inverse=True)
    for n in notes:
        log.warning("%s: %s", where, n)
    return Table(X, y.astype(int), classes, ids, features, where, notes)


def table_hash(df: pd.DataFrame) -> str:
    """sha256 (16 hex) of a table's columns and values, independent of file format."""
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
