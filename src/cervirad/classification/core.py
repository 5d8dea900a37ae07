"""Fit and evaluate the four models in memory (no files): hold-out test or repeated nested CV.

* :func:`evaluate_holdout` - tune every model by GridSearchCV on the fitting rows (inner
  K-fold CV), refit the best setting on all of them, score the untouched test rows.
* :func:`nested_cv` - the same tuning repeated inside each training part of an outer
  stratified K-fold (``outer_folds`` x ``repeats``); every row is scored once per repeat by
  a model that never saw it, not even while choosing k or hyperparameters. The final models
  are then tuned and fitted once more on all rows.

In both, the best model is the one with the highest inner-CV score of its final tuning -
never a test score.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..jsonutil import py_dict
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

    @property
    def best_model(self) -> str:
        return max(self.searches, key=lambda m: (self.searches[m].best_score_, -list(self.searches).index(m)))


def proba_full(pipe, X: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` spread onto all class codes (0 for classes the model never saw)."""
    P = np.zeros((len(X), n_classes))
    P[:, np.asarray(pipe.classes_, dtype=int)] = pipe.predict_proba(X)
    return P


def fit_models(train: Table, ccfg, seed: int, n_jobs: int, cache_dir: str | None) -> tuple[dict, dict]:
    """One tuned, refitted GridSearchCV per configured model, and the seconds each took."""
    searches, seconds = {}, {}
    groups = train.ids if train.has_groups else None
    for name in ccfg.models:
        t0 = time.perf_counter()
        searches[name] = search_model(name, train.X, train.y, groups, ccfg, seed, n_jobs, cache_dir)
        seconds[name] = round(time.perf_counter() - t0, 2)
        log.info("classify: %s tuned in %.1f s, inner-CV %s %.3f, %s", name, seconds[name], ccfg.scoring,
                 searches[name].best_score_, _short(searches[name].best_params_))
    return searches, seconds


def evaluate_holdout(train: Table, test: Table, ccfg, seed: int, n_jobs: int, cache_dir: str | None) -> Result:
    searches, seconds = fit_models(train, ccfg, seed, n_jobs, cache_dir)
    C = len(train.classes)
    probs = {m: [proba_full(gs.best_estimator_, test.X, C)] for m, gs in searches.items()}
    return Result("test_split", test.y, test.ids, probs, searches, seconds=seconds)


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
    return Result("nested_cv", table.y, table.ids, probs, searches, folds, seconds)


def _short(params: dict) -> str:
    return ", ".join(f"{k.split('__', 1)[-1]}={v}" for k, v in params.items())
