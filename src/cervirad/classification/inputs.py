"""What the classify stage reads besides the table itself: the run's patient split, the columns that are
not predictors, the scanner batches; and the one-patient classes a table run leaves out.

* :func:`non_predictors` - ``split``, ``batch`` and the feature stage's non-predictor columns (``columns.json``);
* :func:`split_parts` - each row's part of ``splits.json`` (a clash with the table's own ``split`` column is refused);
* :func:`batch_levels` - the sorted batches of the table's ``batch`` column (a harmonised run refuses a batch
  without a fitting patient);
* :func:`drop_tiny_classes` - nested CV cannot train and test a class of one patient: left out, logged.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..batch import BATCH
from ..config.schema import Config
from ..errors import InputError
from ..files import read_json
from ..pathology import LABEL
from .data import Table

log = logging.getLogger(__name__)
ID = "patient_id"


def non_predictors(columns_json: Path, df: pd.DataFrame) -> tuple[str, ...]:
    """``split`` and ``batch`` plus the columns the feature stage marked as not predictors (treatment variables)."""
    out = ["split", BATCH]
    if columns_json.is_file():
        info = read_json(columns_json)
        out += list(info.get("excluded_from_predictors", []))
        keep = info.get("predictors")
        if keep:
            out += [c for c in df.columns if c not in keep and c not in (ID, LABEL)]
    return tuple(dict.fromkeys(out))


def split_parts(table: Table, df: pd.DataFrame, part_of: dict[str, str], where: str) -> np.ndarray:
    parts = np.array([part_of.get(i, "") for i in table.ids], dtype=object)
    unknown = table.ids[parts == ""]
    if len(unknown):
        log.warning("classify: %d patient(s) of the feature table are in no split of splits.json (e.g. '%s'); "
                    "left out", len(unknown), unknown[0])
    if "split" in df.columns:
        given = df["split"].astype(str).to_numpy()
        clash = (parts != "") & (given != parts)
        if clash.any():
            i = int(np.where(clash)[0][0])
            raise InputError(f"Feature table '{where}': patient '{table.ids[i]}' is '{given[i]}' in its split column "
                             f"but '{parts[i]}' in splits.json; re-run `cervirad extract-features` for this run.")
    return parts


def batch_levels(df: pd.DataFrame, fitting: np.ndarray, cfg: Config, where: str) -> list[str] | None:
    """The batches (sorted) when the feature table carries ``data.batch_column``'s ``batch`` column;
    a harmonised run refuses a batch without a fitting patient (ComBat cannot learn it)."""
    if BATCH not in df.columns:
        if cfg.classification.harmonize != "none":
            raise InputError(f"classification.harmonize is '{cfg.classification.harmonize}' but feature table "
                             f"'{where}' has no '{BATCH}' column; set data.batch_column and re-run "
                             "`cervirad extract-features`.")
        return None
    labels = df[BATCH].astype(str).to_numpy()
    seen = set(labels[fitting])
    unseen = sorted(set(labels) - seen)
    if unseen and cfg.classification.harmonize != "none":
        n = int(np.isin(labels, unseen).sum())
        raise InputError(f"Batch(es) {unseen} of feature table '{where}' hold {n} test patient(s) but no train/val "
                         "patient: ComBat cannot learn a scanner it never saw; re-split so every scanner is in "
                         "training, or set classification.harmonize: none.")
    return sorted(set(labels))


def drop_tiny_classes(table: Table) -> tuple[Table, list]:
    """Nested CV cannot train and test a class of one patient: such classes are left out (logged)."""
    patients = pd.Series(table.ids).groupby(table.y).nunique()
    tiny = [int(c) for c, n in patients.items() if n < 2]
    if not tiny:
        return table, []
    labels = [table.classes[c].item() if hasattr(table.classes[c], "item") else table.classes[c] for c in tiny]
    log.warning("classify: class(es) %s have a single patient; nested CV cannot both train and test them, so their "
                "rows are left out", labels)
    keep = ~np.isin(table.y, tiny)
    if len(np.unique(table.y[keep])) < 2:
        raise InputError(f"Feature table '{table.name}': after leaving out one-patient classes {labels} fewer than "
                         "two classes remain; add patients of the other classes.")
    classes, y = np.unique(table.classes[table.y[keep]], return_inverse=True)
    t = Table(table.X[keep], y, classes, table.ids[keep], table.features, table.name,
              table.notes + [f"one-patient class(es) {labels} left out"])
    return t, labels
