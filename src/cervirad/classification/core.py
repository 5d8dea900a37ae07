"""Fit and evaluate the four models in memory (no files): hold-out test or repeated nested CV.

* :func:`evaluate_holdout` - tune every model by GridSearchCV on the fitting rows (inner
  K-fold CV), refit the best setting on all of them, score the untouched test rows.
* :func:`nested_cv` - the same tuning repeated inside each training part of an outer
  stratified K-fold (``outer_folds`` x ``repeats``); every row is scored once per repeat by
  a model that never saw it, not even while choosing k or hyperparameters. The final models
  are then tuned and fitted once more on all rows.

The best model is never chosen on a test score, and not by the largest inner-CV maximum either:
the maximum over a grid is optimistic in proportion to the grid's size (864 RF candidates vs 72
LR in ``paper.yaml``), so the largest grid would win by construction (:func:`choose_model`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..jsonutil import py_dict
from .calibration import calibrate_search
from .data import Table
from .estimators import make_cv
from .search import rows, search_model

log = logging.getLogger(__name__)


@dataclass
class Result:
    """Predictions and fitted searches of one evaluation."""

    mode: str  # "test_split" | "nested_cv"
    y: np.ndarray  # codes of the evaluated rows
    groups: np.ndarray  # patient id per evaluated row
    probs: dict[str, list[np.ndarray]]  # model -> one probability matrix per repeat
    searches: dict[str, object]  # model -> fitted GridSearchCV (final models)
    folds: list[dict] = field(default_factory=list)  # nested CV: choices per outer fold
    seconds: dict[str, float] = field(default_factory=dict)

    choice: dict = field(default_factory=dict)  # the model chosen, the rule and each model's evidence

    @property
    def best_model(self) -> str:
        return self.choice["model"] if self.choice else choose_model(self)["model"]


def choose_model(res: "Result", scoring: str = "f1_macro") -> dict:
    """The final model, by a rule robust to grid size.

    * Nested CV: the model whose whole tuning procedure scored best on the OUTER folds (rows it
      never saw while tuning), mean over repeats: an estimate the grid size does not inflate.
    * Hold-out: the one-standard-error rule across models: among the models whose inner-CV mean
      is within one standard error (over the inner folds) of the best, the one with the smallest
      grid (fewest candidates, least room for optimistic selection); ties by mean, then order.
    """
    models = list(res.searches) or list(res.probs)
    order = {m: i for i, m in enumerate(models)}
    evidence: dict = {}
    if res.mode == "nested_cv" and all(len(res.probs.get(m, [])) for m in models):
        for m in models:
            evidence[m] = {"outer_cv_score": float(np.mean([_score(scoring, res.y, P) for P in res.probs[m]]))}
        best = max(models, key=lambda m: (evidence[m]["outer_cv_score"], -order[m]))
        return {"model": best, "rule": f"highest outer-fold (nested CV) {scoring}", "evidence": evidence}
    for m in models:
        gs = res.searches[m]
        cv = gs.cv_results_
        n_folds = sum(1 for k in cv if k.startswith("split") and k.endswith("_test_score")) or 1
        sd = float(np.asarray(cv.get("std_test_score", [0.0]))[gs.best_index_]) if cv else 0.0
        evidence[m] = {"inner_cv_mean": float(gs.best_score_), "inner_cv_sd": sd,
                       "inner_cv_se": sd / np.sqrt(n_folds), "candidates": len(cv.get("params", [])) or 1}
    top = max(models, key=lambda m: (evidence[m]["inner_cv_mean"], -order[m]))
    floor = evidence[top]["inner_cv_mean"] - evidence[top]["inner_cv_se"]
    eligible = [m for m in models if evidence[m]["inner_cv_mean"] >= floor]
    best = min(eligible, key=lambda m: (evidence[m]["candidates"], -evidence[m]["inner_cv_mean"], order[m]))
    return {"model": best, "rule": f"one-standard-error rule on inner-CV {scoring}, then the smallest grid",
            "evidence": evidence}


def _score(scoring: str, y: np.ndarray, P: np.ndarray) -> float:
    """``scoring`` (a scikit-learn scorer name) of stored out-of-fold probabilities ``P``."""
    from sklearn.metrics import get_scorer

    ok = ~np.isnan(P).any(axis=1)
    frozen = _Frozen(P[ok])
    return float(get_scorer(scoring)(frozen, np.arange(int(ok.sum())).reshape(-1, 1), y[ok]))


class _Frozen:
    """An 'estimator' that answers with stored probabilities (row i of ``P`` for input i)."""

    _estimator_type = "classifier"

    def __init__(self, P: np.ndarray):
        self.P = P
        self.classes_ = np.arange(P.shape[1])

    def predict_proba(self, X):
        return self.P[np.asarray(X).ravel().astype(int)]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())


def proba_full(pipe, X: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` spread onto all class codes (0 for classes the model never saw)."""
    P = np.zeros((len(X), n_classes))
    P[:, np.asarray(pipe.classes_, dtype=int)] = pipe.predict_proba(X)
    return P


def fit_models(train: Table, ccfg, seed: int, n_jobs: int, cache_dir: str | None, icc=None) -> tuple[dict, dict]:
    """One tuned, refitted GridSearchCV per configured model, and the seconds each took; with
    ``classification.calibration`` its final pipeline is calibrated on the same rows (:mod:`.calibration`)."""
    from .harmonize import make_harmonizer  # classification.harmonize: ComBat first in every fold (else None)

    searches, seconds = {}, {}
    groups = train.ids if train.has_groups else None
    harmonizer = make_harmonizer(ccfg, train.features)
    for name in ccfg.models:
        t0 = time.perf_counter()
        searches[name] = search_model(name, train.X, train.y, groups, ccfg, seed, n_jobs, cache_dir, icc, harmonizer)
        calibrate_search(searches[name], train.X, train.y, groups, ccfg, seed)  # same rows; none: unchanged
        seconds[name] = round(time.perf_counter() - t0, 2)
        log.info("classify: %s tuned in %.1f s, inner-CV %s %.3f, %s", name, seconds[name], ccfg.scoring,
                 searches[name].best_score_, _short(searches[name].best_params_))
    return searches, seconds


def evaluate_holdout(train: Table, test: Table, ccfg, seed: int, n_jobs: int, cache_dir: str | None,
                     icc=None) -> Result:
    """``icc``: the perturbation ICC of every feature column, for ``classification.min_icc``'s filter step."""
    searches, seconds = fit_models(train, ccfg, seed, n_jobs, cache_dir, icc)
    C = len(train.classes)
    probs = {m: [proba_full(gs.best_estimator_, test.X, C)] for m, gs in searches.items()}
    res = Result("test_split", test.y, test.ids, probs, searches, seconds=seconds)
    res.choice = choose_model(res, ccfg.scoring)
    return res


def nested_cv(table: Table, ccfg, seed: int, n_jobs: int, cache_dir: str | None, final: bool = True) -> Result:
    """Repeated nested CV; ``final=False`` skips the last all-rows fit (tests)."""
    C = len(table.classes)
    groups = table.ids if table.has_groups else None
    probs: dict[str, list[np.ndarray]] = {m: [] for m in ccfg.models}
    folds = []
    for r in range(ccfg.repeats):
        P = {m: np.full((len(table.y), C), np.nan) for m in ccfg.models}
        for f, (tr, te) in enumerate(make_cv(table.y, groups, ccfg.outer_folds, seed + 1000 * (r + 1))):
            inner = table.subset(np.isin(np.arange(len(table.y)), tr))
            searches, _ = fit_models(inner, ccfg, seed, n_jobs, cache_dir)
            for m, gs in searches.items():
                P[m][te] = proba_full(gs.best_estimator_, rows(table.X, te), C)
                folds.append({"repeat": r, "fold": f, "model": m, "train_rows": tr.tolist(), "test_rows": te.tolist(),
                              "best_params": py_dict(gs.best_params_), "inner_score": float(gs.best_score_)})
            log.info("classify: nested CV repeat %d/%d, outer fold %d done", r + 1, ccfg.repeats, f + 1)
        for m in ccfg.models:
            probs[m].append(P[m])
    searches, seconds = fit_models(table, ccfg, seed, n_jobs, cache_dir) if final else ({}, {})
    res = Result("nested_cv", table.y, table.ids, probs, searches, folds, seconds)
    if final:
        res.choice = choose_model(res, ccfg.scoring)
    return res


def _short(params: dict) -> str:
    return ", ".join(f"{k.split('__', 1)[-1]}={v}" for k, v in params.items())
