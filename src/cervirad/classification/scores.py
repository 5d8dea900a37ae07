"""One evaluation's scores: every model's metrics with intervals (the per-model block of ``metrics.json``)
and the per-patient rows of ``predictions.csv``.

* :func:`model_metrics` - each model's metrics and intervals (:mod:`.metrics`; nested CV: Nadeau-Bengio over the
  outer folds), its calibration (:mod:`.calibration`), its inner-CV score, and ``best.*``;
* :func:`write_predictions` - truth, the best model's class and probabilities, every model's class.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..io import write_table
from ..jsonutil import py_value
from .calibration import CALIBRATION_DEFINITION, flat_calibration
from .metrics import (AUC_MACRO_DEFINITION, CI_METHODS, HEADLINE, ci_method, flatten, metric_intervals,
                      nested_cv_intervals)

if TYPE_CHECKING:  # annotations only: no import-time dependency on the fitting code
    from .core import Result

CAL_BOOT = 500  # resamples of the model-level calibration interval (each refits C x 2 logistic models)


def model_metrics(y, probs, groups, res: Result, cc, classes, known) -> dict:
    """Every model's metrics with intervals (:mod:`.metrics`; nested CV: Nadeau-Bengio over the outer folds),
    calibration (:mod:`.calibration`) and ``best.*``: the final model's (hold-out) or, in nested CV, the
    whole procedure's with the model chosen inside each outer fold."""
    metrics: dict = {}
    support = np.bincount(y, minlength=len(classes))
    for i, (m, P) in enumerate(probs.items()):
        metrics.update(flatten(m, _intervals(y, P, groups, res, cc, 1000 + i), classes, support))
        metrics.update(flat_calibration(m, y, np.mean(P, axis=0), classes, known, min(cc.bootstrap, CAL_BOOT), 1000 + i,
                                        groups))
        if m in res.searches:
            metrics[f"{m}.inner_cv_score"] = round(float(res.searches[m].best_score_), 6)
    best = res.best_model
    metrics["best_model"] = best
    if res.choice:
        metrics["best_model_rule"] = res.choice["rule"]
    if res.selected:  # nested CV: the procedure (choice inside every outer fold), not the best of four scores
        sel = flatten("best", _intervals(y, res.selected, groups, res, cc, 999), classes, support)
        for k in HEADLINE:
            metrics[f"best.{k}"] = sel[f"best.{k}"]
        metrics["best_definition"] = ("nested CV of the whole procedure: inside every outer training part the four "
                                      "models are tuned and one is chosen by the final-model rule; best.* scores "
                                      "that choice on its outer fold (no winner's curse)")
        metrics["chosen_in_outer_folds"] = {m: sum(1 for f in res.folds if f["model"] == m and f.get("chosen_in_fold"))
                                            for m in probs}
    else:
        for k in HEADLINE:
            metrics[f"best.{k}"] = metrics[f"{best}.{k}"]
        metrics["best_definition"] = "the final model (chosen on the fitting patients' inner CV) on the test patients"
    metrics["auc_macro_definition"] = AUC_MACRO_DEFINITION
    metrics["ci_method"] = (ci_method(cc.bootstrap) if res.mode != "nested_cv" else
                            "95 % intervals: " + CI_METHODS["nadeau_bengio"])
    metrics["ci_methods"] = CI_METHODS
    metrics["calibration_method"] = getattr(cc, "calibration", "none")
    metrics["calibration_definition"] = CALIBRATION_DEFINITION
    # scored like any other class (zero probability), but the model cannot recognise them: flagged
    metrics["classes_absent_from_training"] = [py_value(classes[c]) for c in range(len(classes)) if not known[c]]
    return metrics


def _intervals(y, P: list, groups, res: Result, cc, seed: int) -> dict:
    """Point values and intervals of one model's (or the procedure's) probabilities, one matrix per repeat."""
    if res.mode == "nested_cv" and res.outer:
        return nested_cv_intervals(y, P, res.outer, metric_intervals(y, P, groups, 0, seed))
    return metric_intervals(y, P, groups, cc.bootstrap, seed)


def write_predictions(path: Path, res: Result, mean_P: dict, classes, known, best, id_column, label_column) -> None:
    """One row per evaluated row: truth, the best model's class and probabilities, every model's class."""
    P = mean_P[best]
    df = pd.DataFrame({id_column: res.groups, label_column: classes[res.y], "predicted": classes[P.argmax(axis=1)]})
    for c in np.where(known)[0]:
        df[f"prob_{classes[c]}"] = P[:, c]
    for m, Pm in mean_P.items():
        df[f"predicted_{m}"] = classes[Pm.argmax(axis=1)]
    write_table(df, path)
