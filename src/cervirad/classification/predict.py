"""Apply a saved classifier to a new feature table: per-patient class and probabilities.

The model folder is a ``classification/`` folder written by ``cervirad classify`` (or the
run directory holding it). ``model.joblib`` is a pickle, and unpickling runs code, so a
model is loaded only when its folder sits in a cervirad run directory (a ``run.json`` next
to it) or the caller passes ``trust_model=True`` (``--trust-model``). The file must also
match the sha256 recorded in ``model_card.json``.

The predicted class is the arg-max of the probabilities, as in the stage's own metrics.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import read_table, write_table
from ..rundir import MODEL_CARD, Layout, file_hash
from .data import feature_matrix

log = logging.getLogger(__name__)


def model_dir(path: str | Path) -> Path:
    """The folder holding ``model_card.json``: ``path`` itself, its ``classification/``, or a model file's folder."""
    p = Path(path)
    for d in (p.parent if p.is_file() else p, Layout(p).classification_dir):
        if (d / MODEL_CARD).is_file():
            return d
    raise InputError(f"No model_card.json in '{p}' or '{p / 'classification'}'; point --model at a run directory "
                     "or its classification/ folder written by `cervirad classify`.")


def load_model(path: str | Path, trust_model: bool = False, name: str | None = None):
    """(fitted pipeline, model card) after the trust and integrity checks."""
    import joblib

    d = model_dir(path)
    card = json.loads((d / MODEL_CARD).read_text(encoding="utf-8"))
    in_run = Layout(d.parent).run_json.is_file() or Layout(d).run_json.is_file()
    if not in_run and not trust_model:
        raise InputError(f"Model folder '{d}' is not inside a cervirad run directory (no run.json next to it); "
                         "loading a pickle executes code, so pass --trust-model only if you trust its source.")
    rel = card["model_file"] if name is None else card["models"].get(name)
    if rel is None:
        raise InputError(f"Model folder '{d}' has no model '{name}'; choose one of {', '.join(card['models'])}.")
    f = d / rel
    expected = card["model_sha256"] if name is None else card["model_sha256_by_name"][name]
    if not f.is_file() or file_hash(f) != expected:
        raise InputError(f"Model file '{f}' is missing or differs from the sha256 in model_card.json; "
                         "re-run `cervirad classify` to write a consistent model folder.")
    return joblib.load(f), card


def predict_table(model: str | Path, table: str | Path | pd.DataFrame, out: str | Path | None = None,
                  trust_model: bool = False, name: str | None = None) -> pd.DataFrame:
    """Predict every row of ``table``; writes ``out`` (CSV/Parquet) when given and returns the frame."""
    pipe, card = load_model(model, trust_model, name)
    where = str(table) if not isinstance(table, pd.DataFrame) else "table"
    df = table if isinstance(table, pd.DataFrame) else read_table(table, "feature table")
    df = df.rename(columns=str)
    id_col, features = card["id_column"], card["feature_columns"]
    if id_col not in df.columns:
        raise InputError(f"Feature table '{where}' has no id column '{id_col}' that the model expects; "
                         "rename the id column or add it.")
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise InputError(f"Feature table '{where}' lacks {len(missing)} feature column(s) the model needs: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; "
                         "extract the same features as for training.")
    extra = [c for c in df.columns if c not in (*features, id_col, card["label_column"], "split")]
    if extra:
        log.warning("predict: %d column(s) the model does not use are ignored (e.g. %s)", len(extra), extra[0])
    X, notes = feature_matrix(df, features, where)
    for n in notes:
        log.warning("predict: %s", n)
    codes = np.asarray(card["class_codes"], dtype=object)
    labels = codes[np.asarray(pipe.classes_, dtype=int)]
    P = pipe.predict_proba(X)
    res = pd.DataFrame({id_col: df[id_col].astype(str).to_numpy(), "predicted": labels[P.argmax(axis=1)]})
    for j, lab in enumerate(labels):
        res[f"prob_{lab}"] = P[:, j]
    if card["label_column"] in df.columns:
        res.insert(1, card["label_column"], df[card["label_column"]].to_numpy())
    if out is not None:
        write_table(res, out)
    return res
