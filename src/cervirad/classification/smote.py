"""SMOTE whose neighbour count adapts to the smallest class of each training fold.

SMOTE synthesises a minority sample on the segment between a real sample and one of its
``k`` nearest same-class neighbours, so a class with ``n`` members allows at most
``k = n - 1``. Inside cross-validation the class sizes change from fold to fold, so the
neighbour count is chosen per ``fit_resample`` call:

* every class is oversampled to the size of the largest class;
* ``k_neighbors = min(self.k_neighbors, n_min - 1)`` where ``n_min`` is the smallest class
  with at least two members;
* a class with a single member cannot be interpolated: it is duplicated up to the majority
  size (``singleton="random"``, random oversampling) or left as is (``singleton="none"``),
  with a logged warning either way.

It is a sampler (``fit_resample``), so imbalanced-learn's Pipeline applies it while fitting
only, never when predicting: test rows are never resampled or used as neighbours.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator

from ..jsonutil import py_value

log = logging.getLogger(__name__)


class AdaptiveSMOTE(BaseEstimator):
    """SMOTE with per-fold ``k_neighbors`` and an explicit rule for one-member classes.

    After ``fit_resample``, ``report_`` holds what was done: the class counts before and
    after, the neighbour count used, and the classes handled by the singleton rule - keyed by
    the values of ``y`` it was given, in cervirad the internal class codes (0..C-1 of the
    sorted labels); the classify stage translates them to labels for ``summary.json``.
    """

    def __init__(self, k_neighbors: int = 5, singleton: str = "random", random_state=None):
        self.k_neighbors = k_neighbors
        self.singleton = singleton
        self.random_state = random_state

    def fit(self, X, y):
        self.fit_resample(X, y)
        return self

    def fit_resample(self, X, y):
        from imblearn.over_sampling import SMOTE, RandomOverSampler

        if self.singleton not in ("random", "none"):
            raise ValueError(f"AdaptiveSMOTE.singleton must be 'random' or 'none', got {self.singleton!r}")
        y_arr = np.asarray(y)
        classes, counts = np.unique(y_arr, return_counts=True)
        n_max = int(counts.max())
        multi = {c: n_max for c, n in zip(classes, counts) if n >= 2 and n < n_max}
        singles = [c for c, n in zip(classes, counts) if n == 1 and n < n_max]
        k = None
        X_res, y_res = X, y_arr
        if multi:
            n_min = min(int(n) for n in counts if n >= 2)
            k = max(1, min(self.k_neighbors, n_min - 1))
            X_res, y_res = SMOTE(sampling_strategy=multi, k_neighbors=k,
                                 random_state=self.random_state).fit_resample(X_res, y_res)
        if singles:
            log.warning("SMOTE: class code(s) %s (internal codes: positions in summary.json's sorted "
                        "'classes', not labels) have a single training sample; %s", [py_value(c) for c in singles],
                        "duplicated by random oversampling" if self.singleton == "random"
                        else "left as is (singleton='none')")
            if self.singleton == "random":
                X_res, y_res = RandomOverSampler(sampling_strategy={c: n_max for c in singles},
                                                 random_state=self.random_state).fit_resample(X_res, y_res)
        after = dict(zip(*np.unique(y_res, return_counts=True)))
        self.report_ = {
            "counts_before": {py_value(c): int(n) for c, n in zip(classes, counts)},
            "counts_after": {py_value(c): int(n) for c, n in after.items()},
            "k_neighbors": k,
            "singleton_classes": [py_value(c) for c in singles],
            "singleton_rule": self.singleton,
        }
        return X_res, y_res
