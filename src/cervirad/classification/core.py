"""Fit and evaluate the four models in memory (no files): hold-out test or repeated nested CV.

* :func:`evaluate_holdout` - tune every model by GridSearchCV on the fitting rows (inner
  K-fold CV), refit the best setting on all of them, score the untouched test rows.
* :func:`nested_cv` - the same tuning repeated inside each training part of an outer
  stratified K-fold (``outer_folds`` x ``repeats``); every row is scored once per repeat by
  a model that never saw it, not even while choosing k or hyperparameters. The choice among the
  four models is made INSIDE each outer training part too (:func:`choose_model`'s rule on that
  part's inner CV), so the whole procedure - tune four models, pick one - is scored on rows it
  never saw (``Result.selected``: the "best" of nested CV). Taking the highest of the four models'
  outer-fold scores instead would be a winner's curse (on shuffled labels 0.04-0.05 F1 above the
  four models' mean). The final models are then tuned and fitted once more on all rows and the
  final model is chosen there by the same rule.
* :func:`fitting` - the setting every fit of the classify stage runs in: the configured parallel backend,
  one BLAS thread, and a cache folder inside the stage's staging folder, removed afterwards.

The best model is never chosen on a test score, and not by the largest inner-CV maximum either:
the maximum over a grid is optimistic in proportion to the grid's size (864 RF candidates vs 72
LR in ``paper.yaml``), so the largest grid would win by construction (:func:`choose_model`).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from ..classifiers import parsimony_order
from ..jsonutil import py_dict
from ..parallel import parallel_backend
from .calibration import calibrate_search
from .data import Table
from .estimators import make_cv
from .search import rows, search

log = logging.getLogger(__name__)


@contextlib.contextmanager
def fitting(execution, staging: str | Path | None) -> Iterator[str]:
    """Run the enclosed fits with ``execution``'s parallel backend and one BLAS thread; yields a temporary
    folder for the pipeline and ranking caches. It lies inside the stage's staging folder, so even a killed
    run leaves nothing in /tmp (the next run clears it)."""
    with parallel_backend(execution):
        path = tempfile.mkdtemp(prefix="cache-", dir=staging)
        try:
            with threadpool_limits(1, user_api="blas"):
                yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


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
    # nested CV: (repeat, outer test rows, training rows) per outer fold, and the whole procedure's
    # out-of-fold probabilities (the model chosen inside each outer training part), one matrix per repeat
    outer: list = field(default_factory=list)
    selected: list = field(default_factory=list)

    @property
    def best_model(self) -> str:
        return self.choice["model"] if self.choice else choose_model(self)["model"]


def choose_model(res: "Result", scoring: str = "f1_macro") -> dict:
    """The final model from the models' inner-CV evidence (:func:`choose_from_searches`); the same rule
    picks the model inside every outer fold of nested CV."""
    return choose_from_searches(res.searches, scoring)


def choose_from_searches(searches: dict, scoring: str = "f1_macro") -> dict:
    """The one-standard-error rule across models, on each model's inner CV (rows of the fitting set only).

    For each model: the fold scores of its best candidate, their mean and SD (ddof = 1) and the
    Nadeau-Bengio corrected standard error SD x sqrt(1/k + 1/(k - 1)) (k-fold CV: n_test/n_train =
    1/(k - 1); the folds share training rows, so the plain SD/sqrt(k) is too small). Eligible: the models
    whose mean is within one corrected SE of the highest mean. Chosen: the first eligible model in the
    parsimony order of the classifier registry (:func:`cervirad.classifiers.parsimony_order`: simplest
    first; models without a rank follow in config order).
    """
    models = list(searches)
    ranked = parsimony_order()
    order = {m: i for i, m in enumerate([p for p in ranked if p in models] + [m for m in models if m not in ranked])}
    evidence: dict = {}
    for m in models:
        gs = searches[m]
        cv = gs.cv_results_ or {}
        splits = [k for k in cv if k.startswith("split") and k.endswith("_test_score")]
        folds = np.array([float(np.asarray(cv[k])[gs.best_index_]) for k in splits]) if splits else np.array([])
        k = len(folds)
        sd = float(folds.std(ddof=1)) if k > 1 else 0.0
        se = sd * np.sqrt(1 / k + 1 / (k - 1)) if k > 1 else 0.0
        evidence[m] = {"inner_cv_mean": float(gs.best_score_), "inner_cv_sd": sd, "inner_cv_se_corrected": se,
                       "inner_folds": k, "candidates": len(cv.get("params", [])) or 1,
                       "parsimony_rank": order[m] + 1}
    top = max(models, key=lambda m: (evidence[m]["inner_cv_mean"], -order[m]))
    floor = evidence[top]["inner_cv_mean"] - evidence[top]["inner_cv_se_corrected"]
    eligible = [m for m in models if evidence[m]["inner_cv_mean"] >= floor]
    best = min(eligible, key=lambda m: order[m])
    return {"model": best, "rule": f"one-standard-error rule on inner-CV {scoring} (SD ddof=1, Nadeau-Bengio "
                                   f"corrected SE), then the simplest model in the order {' < '.join(order)}",
            "evidence": evidence}


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
        searches[name] = search(name, train.X, train.y, groups, ccfg, seed, n_jobs, cache_dir, icc, harmonizer)
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
    """Repeated nested CV; ``final=False`` skips the last all-rows fit (tests). Inside each outer training part
    the final-model rule (:func:`choose_from_searches`) picks one model: its outer-fold probabilities form
    ``Result.selected``, the whole procedure's estimate."""
    C = len(table.classes)
    groups = table.ids if table.has_groups else None
    probs: dict[str, list[np.ndarray]] = {m: [] for m in ccfg.models}
    folds, outer, selected = [], [], []
    for r in range(ccfg.repeats):
        P = {m: np.full((len(table.y), C), np.nan) for m in ccfg.models}
        S = np.full((len(table.y), C), np.nan)
        for f, (tr, te) in enumerate(make_cv(table.y, groups, ccfg.outer_folds, seed + 1000 * (r + 1))):
            inner = table.subset(np.isin(np.arange(len(table.y)), tr))
            searches, _ = fit_models(inner, ccfg, seed, n_jobs, cache_dir)
            chosen = choose_from_searches(searches, ccfg.scoring)["model"]
            for m, gs in searches.items():
                P[m][te] = proba_full(gs.best_estimator_, rows(table.X, te), C)
                folds.append({"repeat": r, "fold": f, "model": m, "train_rows": tr.tolist(), "test_rows": te.tolist(),
                              "best_params": py_dict(gs.best_params_), "inner_score": float(gs.best_score_),
                              "chosen_in_fold": m == chosen})
            S[te] = P[chosen][te]
            outer.append((r, np.asarray(te), int(len(tr))))
            log.info("classify: nested CV repeat %d/%d, outer fold %d done (chosen inside it: %s)", r + 1,
                     ccfg.repeats, f + 1, chosen)
        for m in ccfg.models:
            probs[m].append(P[m])
        selected.append(S)
    searches, seconds = fit_models(table, ccfg, seed, n_jobs, cache_dir) if final else ({}, {})
    res = Result("nested_cv", table.y, table.ids, probs, searches, folds, seconds, outer=outer, selected=selected)
    if final:
        res.choice = choose_model(res, ccfg.scoring)
    return res


def _short(params: dict) -> str:
    return ", ".join(f"{k.split('__', 1)[-1]}={v}" for k, v in params.items())
