"""Apply a saved classifier to a new feature table: per-patient class and probabilities.

The model folder is a ``classification/`` folder written by ``cervirad classify`` (or the
run directory holding it).

**Trust.** ``model.joblib`` is a pickle, and unpickling runs code. ``classify`` signs every
pickle it writes with an HMAC-SHA256 under this installation's secret key, kept outside all
run folders (:mod:`cervirad.signing`); the signatures sit in ``model_card.json``. A pickle is
loaded only when its signature verifies with this installation's key, or when the caller
passes ``trust_model=True`` (``--trust-model``; a warning says so). A ``run.json`` beside the
folder or a sha256 in the card proves nothing - whoever plants a file recomputes those - so
the sha256 is kept only as an integrity check. The file is read once: the bytes verified are
the bytes unpickled.

Why joblib + HMAC rather than skops (``skops.io``, a format that cannot run code): skops 0.16
round-trips our pipelines, but on load it reports as untrusted not only our own classes
(DropConstant, RankSelector, AdaptiveSMOTE, LabelSafeXGB, ProbaArgmaxSVC) but also
third-party internals (``imblearn.pipeline.Pipeline``, ``sklearn.tree._tree.Tree``,
``xgboost.core.Booster``, ``numpy.dtype``), so we would have to hard-code a trust list of other
libraries' internals that skops itself does not vouch for, and take on a new dependency
(skops + prettytable + wcwidth); the signed pickle gives a clear rule with what we have.

**Rows.** Each input row is checked: a row whose selected features (those that reach the
classifier) are all missing gets no prediction (empty ``predicted``/``prob_*`` cells) and a
warning naming the patient; when every row is like that, :class:`InputError`. A selected
feature beyond the training minimum/maximum by more than ``RANGE_K`` (3) x its training IQR
(the card's ``training_ranges``, raw values of the fitting rows) gets a warning naming the
patient and the worst column (lines capped at ``MAX_LINES``, with a count). Both land in the
output's ``warning`` column too.

The predicted class is the arg-max of the probabilities, as in the stage's own metrics.

**Scanner.** A model trained with ``classification.harmonize: combat`` (its card lists
``batch_levels``) needs each row's scanner in the table's ``batch`` column: rows of a scanner seen in
training are harmonised with its frozen ComBat estimates. A scanner never seen is refused with one
line, unless ``harmonize=True`` (``cervirad evaluate --harmonize``): its ComBat estimates are then
taken from the rows of that scanner in this table (transductive, label-free).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..files import read_json
from ..io import read_table, write_table
from ..layout import MODEL_CARD, Layout
from ..signing import key_id, key_path, load_key, verify_bytes
from .data import feature_matrix

log = logging.getLogger(__name__)

RANGE_K = 3.0  # a value beyond the training min/max by more than RANGE_K x IQR is "far outside"
MAX_LINES = 10  # warning lines per kind before "... and N more"


def model_dir(path: str | Path) -> Path:
    """The folder holding ``model_card.json``: ``path`` itself, its ``classification/``, or a model file's folder."""
    p = Path(path)
    for d in (p.parent if p.is_file() else p, Layout(p).classification_dir):
        if (d / MODEL_CARD).is_file():
            return d
    raise InputError(f"No model_card.json in '{p}' or '{p / 'classification'}'; point --model at a run directory "
                     "or its classification/ folder written by `cervirad classify`.")


def _read_card(d: Path) -> dict:
    f = d / MODEL_CARD
    try:
        card = read_json(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"Model card '{f}' cannot be read ({type(e).__name__}: {e}); re-run `cervirad classify` "
                         "to write a consistent model folder.") from None
    need = ("model_file", "model_sha256", "models", "model_sha256_by_name", "id_column", "label_column",
            "class_codes", "feature_columns")
    lacking = [k for k in need if not isinstance(card, dict) or k not in card]
    if lacking:
        raise InputError(f"Model card '{f}' lacks {', '.join(lacking)}; re-run `cervirad classify` to write a "
                         "consistent model folder.")
    return card


def _unsigned_reason(card: dict, rel: str) -> str:
    sig = (card.get("signatures") or {}).get(rel)
    if not sig:
        return "it carries no signature"
    key = load_key(create=False)
    if key is None:
        return f"this installation has no signing key yet ({key_path()})"
    if card.get("signing_key_id") and card["signing_key_id"] != key_id(key):
        return f"it was signed by another installation (key id {card['signing_key_id']}, here {key_id(key)})"
    return "its signature does not match its bytes"


def load_model(path: str | Path, trust_model: bool = False, name: str | None = None):
    """(fitted pipeline, model card) after the integrity and trust checks (module docstring)."""
    import joblib

    d = model_dir(path)
    card = _read_card(d)
    rel = card["model_file"] if name is None else card["models"].get(name)
    if rel is None:
        raise InputError(f"Model folder '{d}' has no model '{name}'; choose one of {', '.join(card['models'])}.")
    f = d / str(rel)
    if Path(str(rel)).is_absolute() or ".." in Path(str(rel)).parts:
        raise InputError(f"Model card '{d / MODEL_CARD}' names model file '{rel}' outside its folder; "
                         "re-run `cervirad classify` to write a consistent model folder.")
    expected = card["model_sha256"] if name is None else card["model_sha256_by_name"].get(name)
    try:
        data = f.read_bytes() if f.is_file() else None
    except OSError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest()[:16] != expected:
        raise InputError(f"Model file '{f}' is missing or differs from the sha256 in model_card.json; "
                         "re-run `cervirad classify` to write a consistent model folder.")
    if not verify_bytes(data, (card.get("signatures") or {}).get(str(rel))):
        why = _unsigned_reason(card, str(rel))
        if not trust_model:
            raise InputError(f"Model '{f}' is not signed by this installation ({why}: copied from elsewhere or "
                             "tampered); loading a pickle executes code, so pass --trust-model only if you trust "
                             "its source.")
        log.warning("predict: --trust-model: loading '%s' although it is not signed by this installation (%s); "
                    "a pickle executes code", f, why)
    pipe = joblib.load(io.BytesIO(data))
    if not (hasattr(pipe, "predict_proba") and hasattr(pipe, "named_steps") and hasattr(pipe, "classes_")):
        raise InputError(f"Model file '{f}' does not hold a fitted cervirad classifier "
                         f"(found {type(pipe).__name__}); point --model at a folder written by `cervirad classify`.")
    return pipe, card


def _selected(pipe, card: dict, name: str | None) -> list[str]:
    """Input columns that reach the classifier (from the pipeline; the card's list as a fallback)."""
    from .estimators import selected_features

    try:
        return selected_features(pipe, card["feature_columns"])
    except Exception:  # a --trust-model pipeline of another shape
        by_name = card.get("selected_features_by_name") or {}
        return list(by_name.get(name or card.get("model"), card.get("selected_features") or card["feature_columns"]))


def _log_capped(lines: list[str], more: str) -> None:
    for line in lines[:MAX_LINES]:
        log.warning("%s", line)
    if len(lines) > MAX_LINES:
        log.warning("predict: ... and %d more %s (see the 'warning' column)", len(lines) - MAX_LINES, more)


def _fmt(v: float) -> str:
    return f"{float(v):.4g}"


def check_rows(X: np.ndarray, ids: np.ndarray, features: list[str], selected: list[str], card: dict,
               where: str) -> tuple[np.ndarray, list[str]]:
    """(rows to predict, one warning text per row ('' when none)); logs capped warning lines and raises
    :class:`InputError` when no row has any selected feature (module docstring)."""
    col = {c: j for j, c in enumerate(features)}
    sel = [c for c in selected if c in col]
    Xs = X[:, [col[c] for c in sel]]
    empty = np.isnan(Xs).all(axis=1) if sel else np.zeros(len(X), dtype=bool)
    if len(X) and empty.all():
        raise InputError(f"Feature table '{where}': all {len(X)} row(s) have every one of the model's {len(sel)} "
                         f"selected features missing (e.g. patient '{ids[0]}', column '{sel[0]}'); no prediction is "
                         "possible - extract the same features as for training.")
    warn = [""] * len(X)
    lines = []
    for i in np.where(empty)[0]:
        warn[i] = f"no prediction: all {len(sel)} selected features missing"
        lines.append(f"predict: patient '{ids[i]}': all {len(sel)} selected features are missing (e.g. "
                     f"'{sel[0]}'); no prediction for this row")
    _log_capped(lines, "row(s) without prediction")

    ranges = card.get("training_ranges")
    if ranges is None:
        log.info("predict: the model card has no training ranges (written by an older cervirad); "
                 "out-of-range values are not checked")
        return ~empty, warn
    lo, hi, scale, names = [], [], [], []
    for c in sel:
        r = ranges.get(c)
        if not r:
            continue
        s = r["iqr"] if r["iqr"] > 0 else r["max"] - r["min"]
        if not s > 0:
            continue
        names.append(c)
        lo.append(r["min"])
        hi.append(r["max"])
        scale.append(s)
    lines = []
    if names:
        lo, hi, scale = np.array(lo), np.array(hi), np.array(scale)
        V = X[:, [col[c] for c in names]]
        with np.errstate(invalid="ignore"):
            excess = np.fmax((V - hi) / scale, (lo - V) / scale)  # in IQR units beyond the range; NaN stays NaN
        far = np.nan_to_num(excess, nan=-np.inf) > RANGE_K
        for i in np.where(far.any(axis=1) & ~empty)[0]:
            j = int(np.nanargmax(np.where(far[i], excess[i], -np.inf)))
            c, n_more = names[j], int(far[i].sum()) - 1
            text = (f"'{c}' = {_fmt(V[i, j])} far outside the training range [{_fmt(lo[j])}, {_fmt(hi[j])}] "
                    f"(beyond it by {_fmt(excess[i, j])} x IQR > {RANGE_K:g})"
                    + (f", and {n_more} more column(s)" if n_more else ""))
            warn[i] = text
            lines.append(f"predict: patient '{ids[i]}': {text}; the prediction extrapolates")
    _log_capped(lines, "patient(s) with features far outside the training range")
    return ~empty, warn


def _with_batch(df: pd.DataFrame, pipe, card: dict, where: str, harmonize: bool) -> pd.DataFrame:
    """A harmonised model's rows with their batch code (see the module doc); other models: unchanged."""
    from .harmonize import BATCH_FEATURE, batch_codes

    levels, col = card.get("batch_levels"), card.get("batch_column", "batch")
    if not levels:
        if harmonize:
            raise InputError("--harmonize needs a model trained with classification.harmonize: combat; this model "
                             f"(card '{card.get('model')}') was not harmonised, so there is no ComBat step to "
                             "re-estimate.")
        return df
    if col not in df.columns:
        raise InputError(f"Feature table '{where}' has no '{col}' column, but the model was harmonised (ComBat) over "
                         f"scanners {levels}; add each row's scanner as '{col}'.")
    labels = df[col].astype(str)
    unseen = sorted(set(labels) - set(map(str, levels)))
    if unseen and not harmonize:
        n = int(labels.isin(unseen).sum())
        raise InputError(f"Feature table '{where}': scanner(s) {unseen} ({n} row(s)) were not seen in development "
                         f"(ComBat knows {levels}); `cervirad evaluate --harmonize` estimates their ComBat parameters "
                         "from their own images (transductive, no labels); or give rows of a known scanner.")
    if unseen:
        pipe.named_steps["harmonize"].transductive = True
        log.warning("predict: scanner(s) %s unseen in development: their ComBat parameters are estimated from "
                    "these %d row(s) themselves (transductive, no labels)", unseen, int(labels.isin(unseen).sum()))
    return df.assign(**{BATCH_FEATURE: batch_codes(labels, levels)})


MAX_ABS = 1e100  # a feature value beyond this overflows the model's arithmetic (scaling, kernels): rejected


def unusable_values(df: pd.DataFrame, features: list[str], ids: np.ndarray, where: str) -> list[str]:
    """Per row, '' or why it gets no prediction: a feature value that is infinite or beyond ±MAX_ABS (e.g.
    1e308). Logged (capped); every row unusable is an InputError."""
    out = [""] * len(df)
    lines = []
    num = df[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)  # non-numeric: feature_matrix
    flagged = np.isinf(num) | (np.abs(np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0)) > MAX_ABS)
    for i in np.where(flagged.any(axis=1))[0]:
        row, bad = num[i], np.where(flagged[i])[0]
        if bad.size:
            j = bad[0]
            out[i] = (f"no prediction: '{features[j]}' = {row[j]:.4g} is not a usable number (infinite or beyond "
                      f"±{MAX_ABS:g})" + (f", and {bad.size - 1} more column(s)" if bad.size > 1 else ""))
            lines.append(f"predict: patient '{ids[i]}': {out[i][len('no prediction: '):]}; no prediction for this row")
    if len(df) and all(out):
        raise InputError(f"Feature table '{where}': every row has an infinite or overflowing feature value (e.g. "
                         f"patient '{ids[0]}': {out[0][len('no prediction: '):]}); fix the values or extract the "
                         "features again.")
    _log_capped(lines, "row(s) with unusable values")
    return out


def _proba(pipe, X: np.ndarray, ok: np.ndarray, ids: np.ndarray, warn: list[str], where: str) -> np.ndarray:
    """Probabilities of the rows ``ok``; a row the model cannot score (its arithmetic overflows: an error or
    non-finite probabilities) is dropped from ``ok`` with a warning, the others are scored."""
    rows = np.where(ok)[0]
    try:
        with np.errstate(all="ignore"):
            P = pipe.predict_proba(X[rows])
        good = np.isfinite(P).all(axis=1)
    except (ValueError, FloatingPointError, OverflowError):  # e.g. "Input contains infinity": row by row
        P, good = None, None
    if good is None or not good.all():
        out = []
        for r in rows:
            try:
                with np.errstate(all="ignore"):
                    p = pipe.predict_proba(X[[r]])[0]
            except (ValueError, FloatingPointError, OverflowError):
                p = None
            if p is None or not np.isfinite(p).all():
                ok[r] = False
                warn[r] = "no prediction: a feature value overflows the model's arithmetic"
                log.warning("predict: patient '%s': a feature value overflows the model's arithmetic; no prediction "
                            "for this row", ids[r])
            else:
                out.append(p)
        if not ok.any():
            raise InputError(f"Feature table '{where}': no row can be scored - the feature values overflow the model's "
                             f"arithmetic (e.g. patient '{ids[rows[0]]}'); fix the values or extract the features "
                             "again.")
        P = np.array(out)
    return P


def predict_table(model: str | Path, table: str | Path | pd.DataFrame, out: str | Path | None = None,
                  trust_model: bool = False, name: str | None = None, harmonize: bool = False) -> pd.DataFrame:
    """Predict every row of ``table``; writes ``out`` (CSV/Parquet) when given and returns the frame
    (id, label when present, ``predicted``, ``prob_<class>``, ``warning``; rows without prediction are empty).
    ``harmonize``: a scanner unseen in development is harmonised transductively (module doc)."""
    pipe, card = load_model(model, trust_model, name)
    where = str(table) if not isinstance(table, pd.DataFrame) else "table"
    df = table if isinstance(table, pd.DataFrame) else read_table(table, "feature table",
                                                                    id_columns=(card["id_column"],))
    df = _with_batch(df.rename(columns=str), pipe, card, where, harmonize)
    id_col, features = card["id_column"], card["feature_columns"]
    if id_col not in df.columns:
        raise InputError(f"Feature table '{where}' has no id column '{id_col}' that the model expects; "
                         "rename the id column or add it.")
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise InputError(f"Feature table '{where}' lacks {len(missing)} feature column(s) the model needs: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; "
                         "extract the same features as for training.")
    extra = [c for c in df.columns if c not in (*features, id_col, card["label_column"], "split", "batch")]
    if extra:
        log.warning("predict: %d column(s) the model does not use are ignored (e.g. %s)", len(extra), extra[0])
    ids = df[id_col].astype(str).to_numpy()
    unusable = unusable_values(df, features, ids, where)  # before feature_matrix turns inf into missing
    X, notes = feature_matrix(df, features, where)
    for n in notes:
        if "infinite" not in n:  # rows with infinite values get no prediction (unusable_values), none is imputed
            log.warning("predict: %s", n)
    X[np.array([bool(u) for u in unusable], dtype=bool)] = 0.0  # rejected rows: out of the checks and the model
    ok, warn = check_rows(X, ids, features, _selected(pipe, card, name), card, where)
    for i, u in enumerate(unusable):
        if u:
            ok[i], warn[i] = False, u
    codes = np.asarray(card["class_codes"], dtype=object)
    labels = codes[np.asarray(pipe.classes_, dtype=int)]
    P = np.full((len(X), len(labels)), np.nan)
    if ok.any():
        probs = _proba(pipe, X, ok, ids, warn, where)  # may drop rows from ok (overflow)
        P[ok] = probs
    predicted = np.full(len(X), None, dtype=object)
    predicted[ok] = labels[P[ok].argmax(axis=1)]
    res = pd.DataFrame({id_col: ids, "predicted": predicted})
    for j, lab in enumerate(labels):
        res[f"prob_{lab}"] = P[:, j]
    res["warning"] = warn
    if card["label_column"] in df.columns:
        res.insert(1, card["label_column"], df[card["label_column"]].to_numpy())
    if out is not None:
        write_table(res, out)
    return res
