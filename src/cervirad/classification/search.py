"""Exhaustive grid search over (k, model settings, selector) that shares work GridSearchCV repeats.

It scores exactly the candidates ``GridSearchCV`` would, on the same folds, with the same
pipeline (:func:`~cervirad.classification.estimators.build_pipeline`), and returns the same
``best_params_`` / ``best_score_`` / refitted ``best_estimator_`` (tests compare the two).
The work it does not repeat:

* per fold, the cleaning steps and the feature ranking are fitted once per (selector, k)
  task - the ranking once per (selector, fold) through the ranking cache - instead of once
  per candidate;
* forests are nested in their tree count: a random forest of 300 trees holds, tree for
  tree, the forests of 50, 100 and 200 trees of the same seed (scikit-learn draws the tree
  seeds in sequence), and XGBoost's first n rounds are its n-round model. A model whose
  registry entry (:mod:`cervirad.classifiers`) declares such a ``nesting`` has that grid
  fitted once at its largest value and scored at every value (:func:`first_trees`,
  :func:`first_rounds`).

Candidate order (and tie-breaking: the first best wins, as in GridSearchCV) is k ascending,
then the model grid in sorted-key order, then the selector - the order of one GridSearchCV
per k, so ties go to the smallest k.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from ..classifiers import CLASSIFIERS, resolve
from .estimators import build_pipeline, effective_k_grid, make_cv, param_grid, scorer


@dataclass
class SearchResult:
    """The part of GridSearchCV's interface the stage uses."""

    best_params_: dict
    best_score_: float
    best_estimator_: object
    cv_results_: dict = field(default_factory=dict)
    best_index_: int = 0


def candidates(model: str, ccfg, n_features: int) -> list[dict]:
    """Every (select__k, clf__*, select__method) combination, in tie-breaking order."""
    grid = {k: list(v) for k, v in sorted((ccfg.grids.get(model) or {}).items())}
    out = []
    for k in effective_k_grid(ccfg.k_grid, n_features):
        for values in itertools.product(*grid.values()):
            for method in ccfg.selectors:
                out.append({"select__k": k, **{f"clf__{p}": v for p, v in zip(grid, values)},
                            "select__method": method})
    return out


def first_trees(clf, n: int):
    """The first ``n`` trees of a fitted random forest, as a forest (the rf entry's nesting)."""
    sub = copy.copy(clf)
    sub.estimators_ = clf.estimators_[:n]
    sub.n_estimators = n
    return sub


def first_rounds(clf, n: int):
    """A fitted XGBoost classifier read with its first ``n`` boosting rounds (the xgboost entry's nesting)."""
    return _XGBRounds(clf, n)


class _XGBRounds(ClassifierMixin, BaseEstimator):
    """A fitted XGBoost classifier read with its first ``n`` boosting rounds only."""

    def __init__(self, clf, n: int):
        self.clf = clf
        self.n = n

    @property
    def classes_(self):
        return self.clf.classes_

    def predict(self, X):
        return self.clf.predict(X, iteration_range=(0, self.n))

    def predict_proba(self, X):
        return self.clf.predict_proba(X, iteration_range=(0, self.n))


def _task(model: str, ccfg, seed: int, X, y, tr, te, k: int, method: str, cache_dir, fits: list[dict],
          prefix: list | None, icc=None, harmonizer=None) -> list[tuple[dict, float]]:
    """Score every candidate of one (fold, k, selector); ``fits`` are the model settings to fit, ``prefix``
    the values of the model's nesting parameter read from one fit (None: no nesting)."""
    from sklearn.metrics import get_scorer

    s = scorer(ccfg.scoring)
    score = s if callable(s) else get_scorer(s)
    pipe = build_pipeline(model, ccfg, seed, cache_dir, frame=hasattr(X, "iloc"), icc=icc, harmonizer=harmonizer)
    pipe.set_params(select__k=k, select__method=method)
    Xtr, Xte = rows(X, tr), rows(X, te)
    cleaning = ("harmonize", "robust", "impute", "drop_constant", "scale", "select")
    for name in [s for s in cleaning if s in pipe.named_steps]:
        step = pipe.named_steps[name]
        Xtr = step.fit_transform(Xtr, y[tr])
        Xte = step.transform(Xte)
    ytr = y[tr]
    smote = pipe.named_steps["smote"]
    if smote != "passthrough":
        Xtr, ytr = clone(smote).fit_resample(Xtr, ytr)
    out = []
    nesting = CLASSIFIERS[model].nesting
    for params in fits:
        clf = clone(pipe.named_steps["clf"]).set_params(**params)
        if prefix:
            pname, reader = nesting.param, resolve(nesting.reader)
            clf.set_params(**{pname: max(prefix)}).fit(Xtr, ytr)
            for n in prefix:
                out.append(({**params, pname: n}, float(score(reader(clf, n), Xte, y[te]))))
        else:
            clf.fit(Xtr, ytr)
            out.append((params, float(score(clf, Xte, y[te]))))
    return out


def search(model: str, X: np.ndarray, y: np.ndarray, groups, ccfg, seed: int, n_jobs: int,
           cache_dir: str | None = None, icc=None, harmonizer=None) -> SearchResult:
    """Tune (selector, k, model grid) by inner K-fold CV on these rows only; refit the best candidate on all of
    them. GridSearchCV's candidates, folds and choice, computed without its repeated work (module doc)."""
    from joblib import Parallel, delayed

    grid = {p: list(v) for p, v in sorted((ccfg.grids.get(model) or {}).items())}
    nesting = CLASSIFIERS[model].nesting
    pname = nesting.param if nesting else None
    prefix = sorted(grid.pop(pname)) if pname in grid and all(isinstance(v, int) for v in grid[pname]) else None
    fits = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    folds = make_cv(y, groups, ccfg.cv_folds, seed)
    ks = effective_k_grid(ccfg.k_grid, X.shape[1] - (harmonizer is not None))
    jobs = [(f, k, method) for f in range(len(folds)) for k in ks for method in ccfg.selectors]
    results = Parallel(n_jobs=n_jobs)(
        delayed(_task)(model, ccfg, seed, X, y, folds[f][0], folds[f][1], k, method, cache_dir, fits, prefix, icc,
                       harmonizer)
        for f, k, method in jobs)
    scores: dict[tuple, list] = {}
    for (f, k, method), res in zip(jobs, results):
        for params, sc in res:
            key = _key({"select__k": k, "select__method": method, **{f"clf__{p}": v for p, v in params.items()}})
            scores.setdefault(key, [np.nan] * len(folds))[f] = sc
    cands = candidates(model, ccfg, X.shape[1] - (harmonizer is not None))
    split_scores = np.array([scores[_key(c)] for c in cands])
    means = split_scores.mean(axis=1)
    best = int(np.nanargmax(means))
    pipe = build_pipeline(model, ccfg, seed, cache_dir, frame=hasattr(X, "iloc"), icc=icc,
                          harmonizer=harmonizer).set_params(**cands[best])
    pipe.fit(X, y)
    cv_results = {"params": cands, "mean_test_score": means, "std_test_score": split_scores.std(axis=1),
                  **{f"split{i}_test_score": split_scores[:, i] for i in range(len(folds))}}
    return SearchResult(cands[best], float(means[best]), pipe, cv_results, best)


def gridsearchcv_model(model: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, ccfg, seed: int,
                       n_jobs: int, cache_dir: str | None = None, k_grid=None, harmonizer=None):
    """The same tuning with plain scikit-learn ``GridSearchCV`` (reference for tests and the benchmark).

    ``cache_dir`` turns on ``Pipeline(memory=...)`` and the ranking cache; ``k_grid`` restricts k.
    """
    from dataclasses import replace

    from sklearn.model_selection import GridSearchCV

    if k_grid is not None:
        ccfg = replace(ccfg, k_grid=tuple(k_grid))
    gs = GridSearchCV(build_pipeline(model, ccfg, seed, cache_dir, memory=cache_dir is not None, harmonizer=harmonizer),
                      param_grid(model, ccfg, X.shape[1] - (harmonizer is not None)), scoring=scorer(ccfg.scoring),
                      cv=make_cv(y, groups, ccfg.cv_folds, seed), n_jobs=n_jobs, refit=True, error_score="raise")
    return gs.fit(X, y)


def rows(X, idx):
    """Rows ``idx`` of an array or (by position) of a DataFrame."""
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
