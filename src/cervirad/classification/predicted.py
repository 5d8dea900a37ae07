"""The fitted models on features from the segmentation's masks (``features/predicted/features.parquet``).

* :func:`predicted_test` - that table's test patients, columns in the fitted order (the batch code attached
  when the models were harmonised);
* :func:`score_predicted` - the same fitted models scored on them: ``metrics_predicted.json`` and
  ``predictions_predicted.csv``. A test patient whose predicted mask gave no features stays a row, scored from
  the training class prior (:data:`FAILED_MASK_SCORING`) and counted.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..batch import BATCH
from ..config.schema import Config
from ..errors import InputError
from ..files import write_json
from ..io import read_table
from ..layout import METRICS_PREDICTED, PREDICTIONS_PREDICTED
from ..pathology import LABEL
from .core import Result, proba_full
from .data import Table, feature_matrix, normalise_labels
from .harmonize import BATCH_FEATURE, batch_codes
from .inputs import ID
from .metrics import HEADLINE
from .scores import model_metrics, write_predictions

log = logging.getLogger(__name__)

FAILED_MASK_SCORING = ("scored from the training class prior: probability = each class's share of the fitting "
                       "patients, predicted class = the most frequent one; counted among the evaluated patients")


def prior_probs(fit_y: np.ndarray, n_classes: int, n_rows: int) -> np.ndarray:
    """The fitting patients' class shares as the probabilities of ``n_rows`` patients without features."""
    shares = np.bincount(fit_y, minlength=n_classes) / max(len(fit_y), 1)
    return np.tile(shares, (n_rows, 1))


def score_predicted(out: Path, res: Result, pred: Table, ev: Table, fit: Table, cfg: Config, classes, known, best,
                     id_column, label_column) -> dict:
    """Score the fitted models on features from predicted masks: metrics_predicted.json + predictions. Every
    evaluated patient stays a row: one whose predicted mask gave no features (failed or empty mask) is scored
    from the prior (:data:`FAILED_MASK_SCORING`) and counted."""
    missing = ~np.isin(ev.ids, pred.ids)
    failed_ids, failed_y = ev.ids[missing], ev.y[missing]
    C = len(classes)
    prior = prior_probs(fit.y, C, int(missing.sum()))
    probs = {m: [np.vstack([proba_full(gs.best_estimator_, pred.X, C), prior])] for m, gs in res.searches.items()}
    y, ids = np.concatenate([pred.y, failed_y]), np.concatenate([pred.ids, failed_ids])
    sub = Result("predicted_masks", y, ids, probs, res.searches)
    metrics = model_metrics(y, probs, ids, sub, cfg.classification, classes, known)
    metrics["n_eval_patients"] = int(len(np.unique(ids)))
    metrics["n_failed_masks"] = int(missing.sum())
    metrics["failed_mask_patients"] = [str(i) for i in failed_ids]
    metrics["failed_mask_scoring"] = FAILED_MASK_SCORING
    if missing.any():
        log.warning("classify: %d test patient(s) have no predicted-mask features (e.g. '%s'); %s",
                    int(missing.sum()), failed_ids[0], FAILED_MASK_SCORING)
    write_json(out / METRICS_PREDICTED, metrics)
    write_predictions(out / PREDICTIONS_PREDICTED, sub, {m: P[0] for m, P in probs.items()}, classes, known,
                       best, id_column, label_column)
    return {m: {k: metrics[f"{m}.{k}"]["value"] for k in HEADLINE} for m in probs}



def predicted_test(path: Path, fit: Table, splits: dict, levels: list[str] | None = None) -> Table:
    """Test patients of the predicted-mask feature table, columns in the fitted order."""
    df = read_table(path, "predicted-mask feature table", id_columns=(ID,))
    if fit.features[-1] == BATCH_FEATURE:  # the batch code travels with the rows (classification.harmonize)
        df = df.assign(**{BATCH_FEATURE: batch_codes(df[BATCH], levels)})
    missing = [c for c in fit.features if c not in df.columns]
    if missing:
        raise InputError(f"Feature table '{path}' lacks {len(missing)} column(s) the models use (e.g. "
                         f"{', '.join(missing[:5])}); re-run `cervirad extract-features --masks predicted`.")
    df = df[df[ID].astype(str).isin(set(splits["test"]))]
    if df.empty:
        raise InputError(f"Feature table '{path}' holds no test patient of splits.json; "
                         "re-run `cervirad extract-features --masks predicted`.")
    X, notes = feature_matrix(df, fit.features, str(path))
    labels = normalise_labels(df[LABEL]).tolist()
    codes = {v: i for i, v in enumerate(fit.classes.tolist())}
    unknown = sorted({v for v in labels if v not in codes}, key=str)
    if unknown:
        raise InputError(f"Feature table '{path}' has label(s) {unknown} not in the manual-mask table; "
                         "both tables must come from the same cohort.")
    return Table(X, np.array([codes[v] for v in labels]), fit.classes, df[ID].astype(str).to_numpy(), fit.features,
                 str(path), notes)

