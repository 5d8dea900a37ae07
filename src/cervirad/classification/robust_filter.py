"""The robust-feature filter: a pipeline step that drops features whose perturbation ICC is low.

``classification.min_icc`` (null = off) puts :class:`RobustnessFilter` first in the classification
pipeline (:func:`~cervirad.classification.estimators.build_pipeline`), so it is cloned and fitted
inside every fold like every other step. Its ICC values are ``features/robustness.csv``'s ICC(1,1),
computed from perturbed extractions of the training patients only (never a test patient) and without
labels; a column without an ICC (clinical variables, features constant across patients) is kept.

An UNSUPERVISED PRE-FILTER (issue 23): the ICCs are computed once, on the perturbations of all
fitting (train + val) patients, and the same values are applied in every inner fold - they are not
recomputed per fold. That shares no label information (the ICC never sees a label, and no test patient),
but the inner folds' validation patients did contribute to the ICC estimate, like a label-free
variance filter fitted on the whole training set. Per-fold ICCs would need the perturbed extractions of
each fold's patients, which the filter does not have at fit time.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin


class RobustnessFilter(SelectorMixin, BaseEstimator):
    """Keep the columns whose ``icc`` (one value per input column, NaN = not assessed) is at least ``min_icc``."""

    def __init__(self, icc=None, min_icc: float | None = None):
        self.icc = icc
        self.min_icc = min_icc

    def fit(self, X, y=None):
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        n = np.shape(X)[1]
        icc = np.full(n, np.nan) if self.icc is None else np.asarray(self.icc, dtype=float)
        if icc.shape != (n,):
            raise ValueError(f"RobustnessFilter has {icc.size} ICC value(s) for {n} feature column(s); "
                             "give one per column (NaN: not assessed)")
        keep = np.ones(n, dtype=bool) if self.min_icc is None else ~(icc < float(self.min_icc))
        if not keep.any():
            raise ValueError(f"no feature has an ICC >= {self.min_icc} (classification.min_icc); lower it")
        self.support_ = keep
        self.n_features_in_ = n
        return self

    def _get_support_mask(self):
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # it comes before the imputer
        return tags
