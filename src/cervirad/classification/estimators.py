"""The one leakage-safe estimator: impute -> drop constant -> scale -> select -> SMOTE -> classifier.

Every learned step sits in a single imbalanced-learn ``Pipeline``; cross-validation clones
and fits the whole chain on each training fold, so imputation medians, the kept columns,
scaling statistics, the feature ranking and the synthetic SMOTE samples never come from
rows that later score the model (SPEC §7).

Speed (no needless refits): :mod:`.search` scores GridSearchCV's candidates while fitting
the cleaning steps once per (fold, selector, k), the feature ranking once per (fold,
selector) - :class:`RankSelector` memoises it, and every k of the grid reuses it because the
rankings are nested (the top 10 are the first 10 of the top 30) - and each forest once at
its largest tree count.

Hyperparameters, ``k`` and the selector are searched jointly, with stratified
(group-aware when a patient has several rows) K-fold splits.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.svm import SVC
from xgboost import XGBClassifier

from ..classifiers import SELECTORS, make_classifier

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- cleaning
def _names_in(est, X) -> None:
    """Remember a DataFrame's column names, as scikit-learn's own transformers do."""
    if hasattr(X, "columns"):
        est.feature_names_in_ = np.asarray(X.columns, dtype=object)
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_


class DropConstant(SelectorMixin, BaseEstimator):
    """Drop constant and near-constant columns.

    A column is dropped when its most frequent value covers at least ``1 - threshold`` of
    the rows: ``threshold=0`` drops only exactly constant columns, ``0.05`` also drops
    columns that hold one value in >= 95 % of the rows.
    """

    def __init__(self, threshold: float = 0.0):
        self.threshold = threshold

    def fit(self, X, y=None):
        _names_in(self, X)
        X = np.asarray(X, dtype=float)
        if self.threshold <= 0:
            keep = np.ptp(X, axis=0) > 0
        else:
            share = np.array([np.unique(col, return_counts=True)[1].max() / len(col) for col in X.T])
            keep = share < 1.0 - self.threshold
        if not keep.any():
            raise ValueError("every feature column is constant on this training fold; nothing left to learn from")
        self.support_ = keep
        self.n_features_in_ = X.shape[1]
        return self

    def _get_support_mask(self):
        return self.support_


# --------------------------------------------------------------------------- selection
def rank_features(method: str, X: np.ndarray, y: np.ndarray, random_state: int = 0,
                  n_trees: int = 100, rfe_step: float = 0.1) -> np.ndarray:
    """A score per column, higher = more useful; the top-k columns by score are kept.

    * ``anova``: the one-way ANOVA F statistic of the column across classes (NaN -> 0).
    * ``rf``: impurity importance of a random forest with ``n_trees`` trees.
    * ``rfe``: recursive feature elimination with a linear ridge classifier (one-vs-rest least
      squares on +-1 class targets, alpha 1, closed form, so a round costs milliseconds): each
      round drops the ``rfe_step`` share (at least one) of the remaining columns with the
      smallest summed ``|coef|``; the score is the round a column survived to (ties broken by
      ``|coef|`` in the round it was dropped), so the top-k set is what RFE keeps at size k.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # small matrices: threads only add contention
        return _rank(method, np.asarray(X, dtype=float), np.asarray(y), random_state, n_trees, rfe_step)


def _rank(method, X, y, random_state, n_trees, rfe_step) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import f_classif

    if method == "anova":
        with np.errstate(divide="ignore", invalid="ignore"):
            f, _ = f_classif(X, y)
        return np.nan_to_num(f, nan=0.0, posinf=np.finfo(float).max)
    if method == "rf":
        forest = RandomForestClassifier(n_estimators=n_trees, random_state=random_state, n_jobs=1)
        return forest.fit(X, y).feature_importances_
    if method == "rfe":
        return _rfe_scores(X, y, rfe_step)
    raise ValueError(f"unknown selector {method!r}; choose from {SELECTORS}")


def _rfe_scores(X: np.ndarray, y: np.ndarray, step: float, alpha: float = 1.0) -> np.ndarray:
    n = X.shape[1]
    Xc = X - X.mean(axis=0)
    Y = np.where(y[:, None] == np.unique(y)[None, :], 1.0, -1.0)
    Y -= Y.mean(axis=0)
    scores = np.zeros(n)
    alive = np.arange(n)
    rank = 0.0
    while alive.size > 1:
        weight = np.abs(_ridge_coef(Xc[:, alive], Y, alpha)).sum(axis=1)
        n_drop = max(1, int(step * alive.size))
        order = np.argsort(weight, kind="stable")[:n_drop]
        # within a round: smaller |coef| -> lower score
        scores[alive[order]] = rank + np.arange(1, n_drop + 1) / (n_drop + 1)
        rank += 1.0
        alive = np.delete(alive, order)
    scores[alive] = rank + 1.0
    return scores


def _ridge_coef(X: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights (features x targets) of centred data: X^T (X X^T + alpha I)^-1 Y, or the primal form."""
    n, p = X.shape
    if p > n:
        return X.T @ np.linalg.solve(X @ X.T + alpha * np.eye(n), Y)
    return np.linalg.solve(X.T @ X + alpha * np.eye(p), X.T @ Y)


class RankSelector(SelectorMixin, BaseEstimator):
    """Keep the ``k`` top-ranked columns of one ranking method (:func:`rank_features`).

    ``cache_dir`` (a folder) memoises the ranking per (method, rows, labels), so fitting
    the selector for another ``k`` on the same fold costs only the top-k cut.
    """

    def __init__(self, method: str = "anova", k: int = 30, random_state: int = 0, n_trees: int = 100,
                 rfe_step: float = 0.1, cache_dir: str | None = None):
        self.method = method
        self.k = k
        self.random_state = random_state
        self.n_trees = n_trees
        self.rfe_step = rfe_step
        self.cache_dir = cache_dir

    def fit(self, X, y):
        _names_in(self, X)
        X = np.asarray(X, dtype=float)
        ranker = rank_features
        if self.cache_dir:
            from joblib import Memory

            ranker = Memory(self.cache_dir, verbose=0).cache(rank_features)
        self.scores_ = ranker(self.method, X, np.asarray(y), self.random_state, self.n_trees, self.rfe_step)
        k = min(int(self.k), X.shape[1])
        top = np.argsort(-self.scores_, kind="stable")[:k]
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[top] = True
        self.n_features_in_ = X.shape[1]
        return self

    def _get_support_mask(self):
        return self.support_


# --------------------------------------------------------------------------- classifiers
# (the models themselves, their settings and grids are registered in cervirad/classifiers.py; these are
# the two that need a wrapper)
class LabelSafeXGB(XGBClassifier):
    """XGBoost that accepts any label values (it needs 0..C-1): a training fold may lack a class."""

    def fit(self, X, y, **kwargs):
        values, codes = np.unique(np.asarray(y), return_inverse=True)
        self.__dict__.pop("label_values_", None)
        super().fit(X, codes, **kwargs)
        self.label_values_ = values
        return self

    @property
    def classes_(self):
        v = self.__dict__.get("label_values_")
        return v if v is not None else np.arange(self.n_classes_)

    def predict(self, X, **kwargs):
        return self.label_values_[np.asarray(super().predict(X, **kwargs), dtype=int)]


class ProbaArgmaxSVC(SVC):
    """RBF SVC with Platt-scaled probabilities (libsvm's internal 5-fold CV) whose class is
    the arg-max of those probabilities.

    One decision rule per model: plain ``SVC.predict`` is libsvm's one-vs-one vote, which
    can disagree with the arg-max of ``predict_proba`` (Platt scaling is fitted on internal
    CV folds); cervirad reports the arg-max of ``predict_proba`` (test metrics,
    predictions.csv, ``cervirad predict``), so ``predict`` - and with it every label-based
    scorer of the inner-CV grid search and the permutation importance - uses it too.
    (For every other model ``predict`` already is that arg-max.)

    scikit-learn 1.9 deprecates ``probability=True`` (removal planned for 1.11, hence the
    upper bound in pyproject.toml); the warning is silenced here.
    """

    def fit(self, X, y, sample_weight=None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*probability.*")
            return super().fit(X, y, sample_weight=sample_weight)

    def predict(self, X):
        if not self.probability:  # no probabilities to take the arg-max of: libsvm's vote
            return super().predict(X)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


# models saved before the arg-max rule pickled this name; they load as (and now predict like) the class above
ProbabilitySVC = ProbaArgmaxSVC


# --------------------------------------------------------------------------- the pipeline
def build_pipeline(model: str, ccfg, seed: int, cache_dir: str | None = None, memory: bool = False,
                   frame: bool = False, icc=None, harmonizer=None):
    """impute (median) -> DropConstant -> StandardScaler -> RankSelector -> AdaptiveSMOTE -> classifier
    (``model``: a key of :data:`cervirad.classifiers.CLASSIFIERS`, built as the ``clf`` step).

    ``cache_dir``: folder for the ranking cache (and, with ``memory=True``, the Pipeline's
    step cache, useful when the pipeline goes through plain GridSearchCV). ``frame=True``
    keeps pandas DataFrames (and their row index) between steps. With ``classification.min_icc``, a
    :class:`~.robust_filter.RobustnessFilter` (``icc``: one perturbation ICC per input column) comes first.
    ``harmonizer`` (``classification.harmonize``: an unfitted :class:`~.harmonize.ComBat`, see
    :func:`~.harmonize.make_harmonizer`) comes before everything: it consumes the batch code, the
    last input column, so ``icc`` then has one value per column before it (the batch's is dropped).
    """
    from imblearn.pipeline import Pipeline
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    from .smote import AdaptiveSMOTE

    steps = [
        # an all-missing column is kept (as 0) for drop_constant to remove: no warning per fold and candidate
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("drop_constant", DropConstant(ccfg.near_constant_threshold)),
        ("scale", StandardScaler()),
        ("select", RankSelector(ccfg.selectors[0], ccfg.k_grid[0], random_state=seed, n_trees=ccfg.selector_trees,
                                rfe_step=ccfg.rfe_step, cache_dir=cache_dir)),
        ("smote", AdaptiveSMOTE(ccfg.smote_k_neighbors, ccfg.smote_singleton, random_state=seed)
         if ccfg.smote else "passthrough"),
        ("clf", make_classifier(model, seed)),
    ]
    if ccfg.min_icc is not None:
        from .robust_filter import RobustnessFilter

        if icc is None:
            raise ValueError("classification.min_icc is set but no ICC values were given (features/robustness.csv)")
        if harmonizer is not None and len(icc) == len(harmonizer.columns) + 1:
            icc = np.asarray(icc)[:-1]  # the batch-code column never reaches the filter
        steps.insert(0, ("robust", RobustnessFilter(icc, ccfg.min_icc)))
    if harmonizer is not None:
        from sklearn.base import clone

        steps.insert(0, ("harmonize", clone(harmonizer)))
    pipe = Pipeline(steps, memory=cache_dir if memory else None)
    return pipe.set_output(transform="pandas") if frame else pipe


def effective_k_grid(k_grid, n_features: int) -> list[int]:
    """The k values to search: those below the column count, plus all columns once if any k exceeds it."""
    ks = sorted({int(k) for k in k_grid if k < n_features})
    if any(k >= n_features for k in k_grid):
        ks.append(n_features)
    return ks


def param_grid(model: str, ccfg, n_features: int) -> dict[str, list]:
    grid = {"select__method": list(ccfg.selectors), "select__k": effective_k_grid(ccfg.k_grid, n_features)}
    for key, values in (ccfg.grids.get(model) or {}).items():
        grid[f"clf__{key}"] = list(values)
    return grid


def make_cv(y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int) -> list:
    """Stratified K-fold splits (StratifiedGroupKFold when a group has several rows)."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    n_splits = max(2, min(n_splits, int(np.bincount(np.unique(y, return_inverse=True)[1]).max())))
    X_dummy = np.zeros((len(y), 1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        if groups is not None and len(np.unique(groups)) < len(groups):
            cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            return list(cv.split(X_dummy, y, groups))
        return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X_dummy, y))


def scorer(name: str):
    """sklearn scorer; F1/precision/recall score an absent prediction as 0 instead of warning."""
    from sklearn.metrics import f1_score, make_scorer, precision_score, recall_score

    fns = {"f1": f1_score, "precision": precision_score, "recall": recall_score}
    base, _, avg = name.partition("_")
    if base in fns and avg in ("macro", "weighted", "micro"):
        return make_scorer(fns[base], average=avg, zero_division=0)
    return name


def strip_cache(pipe):
    """Drop cache folders from a fitted pipeline before it is saved (they are temporary)."""
    if hasattr(pipe, "pipeline_"):  # a calibration wrapper (calibration.py): its template and fitted pipeline
        strip_cache(pipe.pipeline)
        strip_cache(pipe.pipeline_)
        return pipe
    pipe.memory = None
    sel = pipe.named_steps["select"]
    sel.cache_dir = None
    return pipe


def selected_features(pipe, feature_names: list[str]) -> list[str]:
    """Input column names that reach the classifier, in the classifier's column order."""
    names = np.asarray(feature_names)
    if "harmonize" in pipe.named_steps:  # classification.harmonize: the batch-code column is consumed
        names = names[:-1]
    if "robust" in pipe.named_steps:  # classification.min_icc
        names = names[pipe.named_steps["robust"].support_]
    imputer = pipe.named_steps["impute"]
    if not getattr(imputer, "keep_empty_features", False):  # models saved before: the imputer dropped them
        names = names[~np.isnan(imputer.statistics_)]
    names = names[pipe.named_steps["drop_constant"].support_]
    return [str(n) for n in names[pipe.named_steps["select"].support_]]


def transform_to_selected(pipe, X) -> np.ndarray:
    """Rows as the classifier sees them at predict time (every step but SMOTE and the classifier)."""
    Xt = X
    for name in ("harmonize", "robust", "impute", "drop_constant", "scale", "select"):
        if name in pipe.named_steps:  # "harmonize", "robust": only with classification.harmonize, .min_icc
            Xt = pipe.named_steps[name].transform(Xt)
    return np.asarray(Xt)


def model_importance(pipe) -> np.ndarray | None:
    """Impurity/gain importance (RF, XGBoost) or mean |coefficient| (LR); None for the RBF SVM."""
    clf = pipe.named_steps["clf"]
    if hasattr(clf, "feature_importances_"):
        return np.asarray(clf.feature_importances_, dtype=float)
    if hasattr(clf, "coef_"):
        return np.abs(np.asarray(clf.coef_, dtype=float)).mean(axis=0)
    return None
