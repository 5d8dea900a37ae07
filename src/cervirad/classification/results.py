"""One evaluation's artifacts in a folder (the main task's ``classification/`` or a sub-task's
``targets/<target>/``).

:func:`write_results` writes ``confusion_matrices.json``, ``predictions.csv``, ``models/<name>.joblib`` and
``model.joblib`` (signed, :mod:`cervirad.signing`), ``summary.json``, ``figures/*.png`` and, with
predicted-mask features, ``metrics_predicted.json`` (:mod:`.predicted`); it returns the summary, the
metrics (:mod:`.scores`, plus the patient counts and the importance share) and the model card
(:mod:`.card`) without writing those two: the stage adds its other parts' keys (Table 1, sub-tasks,
ablation, robust filter) and :func:`write_final` writes ``metrics.json`` and ``model_card.json`` once.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config.schema import Config
from ..files import write_json
from ..jsonutil import py_dict, py_value
from ..layout import (CONFUSION, FIGURES, METRICS, MODEL_CARD, MODEL_FILE, MODEL_JOBLIB, MODELS, PREDICTIONS,
                      SUMMARY)
from ..pathology import LABEL
from ..signing import key_id, load_key, sign_file
from .ablation import importance_share
from .card import model_card
from .data import Table
from .estimators import model_importance, scorer, selected_features, strip_cache, transform_to_selected
from .inputs import ID
from .metrics import HEADLINE, confusion
from .predicted import score_predicted
from .scores import model_metrics, write_predictions

if TYPE_CHECKING:  # annotations only: no import-time dependency on the fitting code
    from .core import Result

log = logging.getLogger(__name__)
SMALL_SAMPLE = 30  # fewer evaluated patients than this: metrics.json and the log say so


@dataclass
class Results:
    """One evaluation: ``summary.json`` as written, and ``metrics.json`` / ``model_card.json`` still to write."""

    summary: dict
    metrics: dict
    card: dict


def write_final(out: Path, results: Results) -> None:
    """``metrics.json`` and ``model_card.json`` of ``out``, each written once (atomically)."""
    write_json(out / METRICS, results.metrics)
    write_json(out / MODEL_CARD, results.card)


def write_results(out: Path, res: Result, fit: Table, ev: Table, cfg: Config, train_hash: str, extra: dict,
                  predicted: Table | None = None, id_column: str = ID, label_column: str = LABEL,
                  batch_levels: list[str] | None = None) -> Results:
    """Write one evaluation's artifacts into ``out`` except ``metrics.json`` and ``model_card.json``, which it
    returns (with the summary) for :func:`write_final`."""
    import joblib

    cc = cfg.classification
    out.mkdir(parents=True, exist_ok=True)
    classes = fit.classes
    labels = [str(c) for c in classes]
    known = np.isin(np.arange(len(classes)), fit.y)
    absent = [py_value(classes[c]) for c in range(len(classes)) if not known[c]]
    t0 = time.perf_counter()
    metrics = model_metrics(res.y, res.probs, res.groups, res, cc, classes, known)
    mean_P = {m: np.mean(P, axis=0) for m, P in res.probs.items()}
    confusions = {m: confusion(res.y, P.argmax(axis=1), len(classes)) for m, P in mean_P.items()}
    best = res.best_model
    metrics["n_fit_patients"] = int(len(np.unique(fit.ids)))
    metrics["n_eval_patients"] = int(len(np.unique(res.groups)))
    metrics["n_classes_absent_from_training"] = len(absent)
    if metrics["n_eval_patients"] < SMALL_SAMPLE:
        note = (f"only {metrics['n_eval_patients']} evaluated patients: every metric is a small-sample estimate "
                "(read the confidence intervals, not the point values)")
        metrics["small_sample_warning"] = note
        log.warning("classify: %s", note)
    write_json(out / CONFUSION,
               {m: {"labels": labels, "rows": "true", "columns": "predicted", "matrix": M.tolist()}
                for m, M in confusions.items()})
    write_predictions(out / PREDICTIONS, res, mean_P, classes, known, best, id_column, label_column)

    (out / MODELS).mkdir(exist_ok=True)
    key = load_key(create=True)
    signatures = {}
    for m, gs in res.searches.items():
        joblib.dump(strip_cache(gs.best_estimator_), out / MODELS / MODEL_FILE.format(m))
        signatures[f"{MODELS}/{MODEL_FILE.format(m)}"] = sign_file(out / MODELS / MODEL_FILE.format(m), key)
    shutil.copyfile(out / MODELS / MODEL_FILE.format(best), out / MODEL_JOBLIB)
    signatures[MODEL_JOBLIB] = sign_file(out / MODEL_JOBLIB, key)
    best_pipe = res.searches[best].best_estimator_

    summary = {
        "evaluation": res.mode, **extra, "best_model": best, "best_by": res.choice.get("rule"),
        "model_choice": res.choice.get("evidence"),
        "classes": [py_value(c) for c in classes], "classes_absent_from_training": absent,
        "class_counts_fit": {labels[c]: int(n) for c, n in enumerate(np.bincount(fit.y, minlength=len(classes)))},
        "class_counts_eval": {labels[c]: int(n) for c, n in enumerate(np.bincount(res.y, minlength=len(classes)))},
        "models": {m: {"inner_cv_score": float(gs.best_score_), "best_params": py_dict(gs.best_params_),
                       "seconds": res.seconds.get(m),
                       "n_selected": len(selected_features(gs.best_estimator_, fit.features)),
                       "smote": _smote_report(gs.best_estimator_, classes)}
                   for m, gs in res.searches.items()},
        "outer_folds": [{k: v for k, v in f.items() if k not in ("train_rows", "test_rows")} for f in res.folds],
        "notes": fit.notes, "headline": {m: {k: metrics[f"{m}.{k}"]["value"] for k in HEADLINE}
                                         for m in res.probs},
    }
    if predicted is not None:
        summary["predicted_masks"] = score_predicted(out, res, predicted, ev, fit, cfg, classes, known, best,
                                                     id_column, label_column)
    importance, correlation = _importance(best_pipe, fit, ev, cc, cfg.run.seed)
    from .figures import write_figures

    figs = write_figures(out / FIGURES, res.y, mean_P, labels, known, metrics, best, confusions, importance,
                         correlation, cc.top_features)
    summary["figures"] = [str(p.relative_to(out)) for p in figs]
    summary["selected_features"] = selected_features(best_pipe, fit.features)
    summary["importance_share"] = importance_share(importance["names"], importance["perm_mean"], importance["model"],
                                                   tuple(cfg.features.sequences))
    metrics.update({f"importance_share.{src}.{k}": v for src, d in summary["importance_share"].items()
                    for k, v in d.items()})
    write_json(out / SUMMARY, summary)
    card = model_card(out, best, res, fit, cfg, train_hash, id_column, label_column, absent, signatures, key_id(key),
                      batch_levels)
    log.info("classify: best model %s (by inner CV): accuracy %.3f, macro AUC %s; outputs written in %.1f s",
             best, metrics[f"{best}.accuracy"]["value"], metrics[f"{best}.auc_macro"]["value"],
             time.perf_counter() - t0)
    return Results(summary, metrics, card)


def _smote_report(pipe, classes) -> dict | None:
    """The fitted SMOTE step's ``report_`` with its internal class codes replaced by the class labels."""
    rep = getattr(pipe.named_steps["smote"], "report_", None)
    if rep is None:
        return None

    def label(code):
        return py_value(classes[int(code)])

    counts = {key: {str(label(c)): n for c, n in rep[key].items()} for key in ("counts_before", "counts_after")}
    return {**rep, **counts, "singleton_classes": [label(c) for c in rep["singleton_classes"]]}


def _importance(pipe, fit: Table, ev: Table, cc, seed: int):
    """Best model: importance of its selected features (model + permutation on the evaluated rows) and
    the selected features of the fitting rows for the correlation map."""
    from sklearn.inspection import permutation_importance

    names = selected_features(pipe, fit.features)
    Xe = transform_to_selected(pipe, ev.X)
    # a calibration wrapper: the classifier step with its calibration (the reported labels)
    clf = pipe.final_estimator() if hasattr(pipe, "final_estimator") else pipe.named_steps["clf"]
    perm = permutation_importance(clf, Xe, ev.y, scoring=scorer(cc.scoring),
                                  n_repeats=cc.permutation_repeats, random_state=seed, n_jobs=1)
    importance = {"names": names, "model": model_importance(pipe), "perm_mean": perm.importances_mean,
                  "perm_sd": perm.importances_std}
    return importance, (transform_to_selected(pipe, fit.X), names)

