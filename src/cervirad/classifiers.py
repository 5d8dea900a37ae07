"""The classifiers cervirad tunes: one :class:`Classifier` entry per model, in :data:`CLASSIFIERS`.

An entry says everything the rest of the package asks about a model:

* ``label``: its name in the report and the figures;
* ``estimator`` and ``fixed``: its class (``"module:Class"``, imported only when a model is built, so
  loading a config imports no sklearn/xgboost; a test checks it) and the settings cervirad gives
  it (seed, one worker, quiet logs);
* ``grid``: the default ``classification.grids.<name>``;
* ``params``: every name of its ``get_params()`` (a test keeps them equal), of which ``reserved``
  ones are cervirad's to set; ``ranges``: the range of each searchable parameter that has one
  (the others are only checked for being known);
* ``nesting``: how one fit holds smaller models of the grid (a forest of 300 trees holds those of
  50, 100 and 200), which :mod:`.classification.search` uses to fit each such grid once;
* ``parsimony``: its rank when the one-standard-error rule picks the simplest of the models that
  are as good as the best (1 = simplest; :func:`.classification.core.choose_from_searches`;
  unranked models follow the ranked ones in config order).

The classify stage puts the built model as the ``clf`` step of the leakage-safe pipeline
(:func:`.classification.estimators.build_pipeline`), so grid keys become ``clf__<param>``. A new
model is one entry here: the config accepts its name and grid, the pipeline builds it, the report
labels it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from .ranges import COUNT, FRACTION, NONNEG, POSITIVE, Range, between, either, one_of


@dataclass(frozen=True)
class Nesting:
    """A grid parameter whose smaller values are prefixes of one fit at its largest value: ``param``,
    and ``reader`` (``"module:function"``), ``reader(fitted, n) -> classifier`` using the first ``n``."""

    param: str
    reader: str


@dataclass(frozen=True)
class Classifier:
    """One model of ``classification.models`` (see the module doc)."""

    label: str
    estimator: str | type
    fixed: Callable[[int], dict] = lambda seed: {}
    grid: dict[str, list] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    ranges: dict[str, Range] = field(default_factory=dict)
    nesting: Nesting | None = None
    parsimony: int | None = None

    def make(self, seed: int):
        """An unfitted estimator with cervirad's fixed settings."""
        return resolve(self.estimator)(**self.fixed(seed))


def resolve(target: str | Any) -> Any:
    """``"package.module:name"`` -> that object (imported now); anything else is returned as it is."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# the feature selectors of the pipeline's select step (classification.selectors; estimators.rank_features)
SELECTORS = ("rf", "anova", "rfe")

# set by cervirad (seed, workers, probabilities for every metric, quiet logs): never searchable
RESERVED = ("n_jobs", "random_state", "probability", "verbose", "verbosity", "callbacks")

_MAX_FEATURES = either(one_of("sqrt", "log2", None), either(COUNT, FRACTION))

CLASSIFIERS: dict[str, Classifier] = {
    "rf": Classifier(
        label="Random forest",
        estimator="sklearn.ensemble:RandomForestClassifier",
        fixed=lambda seed: {"random_state": seed, "n_jobs": 1},
        grid={"n_estimators": [50, 100, 200, 300], "max_depth": [None, 10, 20, 30], "min_samples_split": [2, 5, 10]},
        params=("bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
                "max_samples", "min_impurity_decrease", "min_samples_leaf", "min_samples_split",
                "min_weight_fraction_leaf", "monotonic_cst", "n_estimators", "n_jobs", "oob_score", "random_state",
                "verbose", "warm_start"),
        ranges={
            "n_estimators": COUNT,
            "max_depth": between(1, integer=True, null=True),
            "min_samples_split": either(between(2, integer=True), FRACTION),
            "min_samples_leaf": either(COUNT, between(0, 1, lo_open=True, hi_open=True)),
            "max_features": _MAX_FEATURES,
            "max_leaf_nodes": between(2, integer=True, null=True),
            "max_samples": either(one_of(None), either(COUNT, FRACTION)),
            "criterion": one_of("gini", "entropy", "log_loss"),
            "class_weight": one_of(None, "balanced", "balanced_subsample"),
            "bootstrap": one_of(True, False),
            "ccp_alpha": NONNEG,
            "min_impurity_decrease": NONNEG,
            "min_weight_fraction_leaf": between(0, 0.5),
        },
        nesting=Nesting("n_estimators", "cervirad.classification.search:first_trees"),
        parsimony=3,  # bagged trees
    ),
    "xgboost": Classifier(
        label="XGBoost",
        estimator="cervirad.classification.estimators:LabelSafeXGB",
        fixed=lambda seed: {"random_state": seed, "n_jobs": 1, "tree_method": "hist", "verbosity": 0},
        grid={"n_estimators": [100, 300], "max_depth": [3, 6], "learning_rate": [0.05, 0.1]},
        params=("base_score", "booster", "callbacks", "colsample_bylevel", "colsample_bynode", "colsample_bytree",
                "device", "early_stopping_rounds", "enable_categorical", "eval_metric", "feature_types",
                "feature_weights", "gamma", "grow_policy", "importance_type", "interaction_constraints",
                "learning_rate", "max_bin", "max_cat_threshold", "max_cat_to_onehot", "max_delta_step", "max_depth",
                "max_leaves", "min_child_weight", "missing", "monotone_constraints", "multi_strategy", "n_estimators",
                "n_jobs", "num_parallel_tree", "objective", "random_state", "reg_alpha", "reg_lambda",
                "sampling_method", "scale_pos_weight", "subsample", "tree_method", "validate_parameters", "verbosity"),
        ranges={
            "n_estimators": COUNT,
            "max_depth": between(0, integer=True, null=True),
            "learning_rate": POSITIVE,
            "gamma": NONNEG,
            "min_child_weight": NONNEG,
            "max_delta_step": NONNEG,
            "subsample": FRACTION,
            "colsample_bytree": FRACTION,
            "colsample_bylevel": FRACTION,
            "colsample_bynode": FRACTION,
            "reg_alpha": NONNEG,
            "reg_lambda": NONNEG,
            "max_leaves": between(0, integer=True, null=True),
            "max_bin": between(2, integer=True, null=True),
            "num_parallel_tree": between(1, integer=True, null=True),
        },
        nesting=Nesting("n_estimators", "cervirad.classification.search:first_rounds"),
        parsimony=4,  # boosted trees
    ),
    "svm": Classifier(
        label="SVM (RBF)",
        estimator="cervirad.classification.estimators:ProbaArgmaxSVC",
        fixed=lambda seed: {"probability": True, "random_state": seed},
        grid={"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01]},
        params=("C", "break_ties", "cache_size", "class_weight", "coef0", "decision_function_shape", "degree", "gamma",
                "kernel", "max_iter", "probability", "random_state", "shrinking", "tol", "verbose"),
        ranges={
            "C": POSITIVE,
            "gamma": either(one_of("scale", "auto"), NONNEG),
            "kernel": one_of("linear", "poly", "rbf", "sigmoid"),
            "degree": between(0, integer=True),
            "coef0": between(),
            "tol": POSITIVE,
            "class_weight": one_of(None, "balanced"),
            "shrinking": one_of(True, False),
        },
        parsimony=2,  # kernel
    ),
    "lr": Classifier(
        label="Logistic regression",
        estimator="sklearn.linear_model:LogisticRegression",
        fixed=lambda seed: {"max_iter": 5000},
        grid={"C": [0.01, 0.1, 1.0, 10.0]},
        params=("C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "max_iter", "n_jobs",
                "penalty", "random_state", "solver", "tol", "verbose", "warm_start"),
        ranges={
            "C": POSITIVE,
            "penalty": one_of("l1", "l2", "elasticnet", None),
            "solver": one_of("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"),
            "l1_ratio": either(one_of(None), between(0, 1)),
            "max_iter": COUNT,
            "tol": POSITIVE,
            "class_weight": one_of(None, "balanced"),
            "fit_intercept": one_of(True, False),
        },
        parsimony=1,  # linear
    ),
}


def make_classifier(name: str, seed: int):
    """An unfitted classifier of :data:`CLASSIFIERS`; its grid lives in the config (``classification.grids``)."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown model {name!r}; choose from {tuple(CLASSIFIERS)}")
    return CLASSIFIERS[name].make(seed)


def label(name: str) -> str:
    """The report's name of a model (its key when it is not registered)."""
    return CLASSIFIERS[name].label if name in CLASSIFIERS else name


def parsimony_order() -> tuple[str, ...]:
    """The ranked models, simplest first (see ``parsimony``)."""
    ranked = [(c.parsimony, name) for name, c in CLASSIFIERS.items() if c.parsimony is not None]
    return tuple(name for _, name in sorted(ranked))


def default_grids() -> dict[str, dict[str, list]]:
    """``classification.grids`` by default: every registered model's grid (fresh lists)."""
    return {name: {k: list(v) for k, v in c.grid.items()} for name, c in CLASSIFIERS.items()}
