"""``model_card.json``: what a saved model is, what it was trained on and how to trust it.

The model files and their sha256 and HMAC signatures (:mod:`cervirad.signing`), the class codes, the feature
columns and each model's selected features with the raw training range of every one of them (``predict``
warns far outside it), the training rows and class counts, the calibration, each model's inner-CV score and
settings, the classification config, seed and package versions; a harmonised model also its batch levels.
:func:`model_card` builds it; the stage writes it once (:func:`.results.write_final`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..batch import BATCH
from ..config.schema import Config
from ..files import file_hash
from ..jsonutil import py_dict, py_value
from ..layout import MODEL_FILE, MODEL_JOBLIB, MODELS
from ..provenance import package_versions
from ..signing import ALGORITHM as SIGNATURE_ALGORITHM
from .calibration import CALIBRATION_DEFINITION, METHOD_TEXT as CALIBRATION_METHODS
from .data import Table
from .estimators import selected_features
from .harmonize import BATCH_FEATURE

if TYPE_CHECKING:  # annotations only: no import-time dependency on the fitting code
    from .core import Result


def _training_ranges(fit: Table, names: list[str]) -> dict:
    """Per feature of ``names``: min, max, quartiles and IQR over the fitting rows (raw values, before
    imputation and scaling; missing values ignored) - ``predict`` flags values far outside them."""
    idx = {f: j for j, f in enumerate(fit.features)}
    out = {}
    for f in names:
        v = fit.X[:, idx[f]]
        v = v[np.isfinite(v)]
        if len(v) == 0:
            continue
        q1, q3 = np.percentile(v, [25, 75])
        out[f] = {"min": float(v.min()), "max": float(v.max()), "q1": float(q1), "q3": float(q3),
                  "iqr": float(q3 - q1)}
    return out


def model_card(out: Path, best: str, res: Result, fit: Table, cfg: Config, train_hash: str, id_column: str,
               label_column: str, absent: list, signatures: dict[str, str], signer: str,
               batch_levels: list[str] | None = None) -> dict:
    """The card of the models saved in ``out`` (their files are hashed here), ``best`` the final one."""
    pipe = res.searches[best].best_estimator_
    selected_by_name = {m: selected_features(gs.best_estimator_, fit.features) for m, gs in res.searches.items()}
    used = list(dict.fromkeys(f for names in selected_by_name.values() for f in names))
    card = {
        "cervirad_version": __version__, "model": best, "model_file": MODEL_JOBLIB,
        "model_sha256": file_hash(out / MODEL_JOBLIB),
        "models": {m: f"{MODELS}/{MODEL_FILE.format(m)}" for m in res.searches},
        "model_sha256_by_name": {m: file_hash(out / MODELS / MODEL_FILE.format(m)) for m in res.searches},
        # HMAC-SHA256 of each pickle with this installation's key (cervirad.signing): predict loads
        # only pickles whose signature verifies, or any with --trust-model
        "signature_algorithm": SIGNATURE_ALGORITHM, "signing_key_id": signer, "signatures": signatures,
        "id_column": id_column, "label_column": label_column,
        "class_codes": [py_value(c) for c in fit.classes],
        "classes": [py_value(fit.classes[int(c)]) for c in pipe.classes_],
        "classes_absent_from_training": absent,
        "feature_columns": fit.features, "selected_features": selected_features(pipe, fit.features),
        "selected_features_by_name": selected_by_name,
        # raw training range of every feature some saved model selects (predict warns far outside it)
        "training_ranges": _training_ranges(fit, used),
        "training_table_sha256": train_hash, "training_rows": int(len(fit.y)),
        "training_class_counts": {str(py_value(c)): int(n) for c, n in
                                  zip(fit.classes, np.bincount(fit.y, minlength=len(fit.classes)))},
        # the ONE calibration of the saved probabilities; the report and `evaluate` read it from here
        "calibration": {"method": cfg.classification.calibration,
                        "description": CALIBRATION_METHODS[cfg.classification.calibration],
                        "metrics_definition": CALIBRATION_DEFINITION},
        "training_patients": int(len(np.unique(fit.ids))), "evaluation": res.mode,
        "cv_scores": {m: {"scoring": cfg.classification.scoring, "inner_cv_score": float(gs.best_score_),
                          "best_params": py_dict(gs.best_params_)} for m, gs in res.searches.items()},
        "config": cfg.to_dict()["classification"], "seed": cfg.run.seed, "packages": package_versions(),
    }
    if fit.features[-1] == BATCH_FEATURE:  # harmonised: predict maps each row's batch label to these codes
        card["batch_column"] = BATCH
        card["batch_levels"] = list(batch_levels) if batch_levels is not None else None
    return card

