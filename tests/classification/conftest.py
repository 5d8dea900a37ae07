"""Fixtures for the classification tests: small seeded tables and a fast config."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cervirad.config import load_config
from tests.classification.synthetic import synthetic_table

FAST_GRIDS = {
    "rf": {"n_estimators": [10, 20], "max_depth": [None, 3]},
    "xgboost": {"n_estimators": [5, 10], "max_depth": [2], "learning_rate": [0.3]},
    "svm": {"C": [1.0], "gamma": ["scale"]},
    "lr": {"C": [0.1, 1.0]},
}


@pytest.fixture(scope="session")
def fast_cfg():
    """Full config with tiny grids: every model and selector, two k values, few bootstraps."""
    cfg = load_config(None, ["execution.n_jobs=1", "classification.bootstrap=50", "classification.cv_folds=3",
                             "classification.outer_folds=3", "classification.permutation_repeats=2",
                             "classification.selector_trees=20"])
    return replace(cfg, classification=replace(cfg.classification, k_grid=(5, 15), grids=FAST_GRIDS))


@pytest.fixture(scope="session")
def demo_like():
    """A 60-patient, 120-feature, 4-class table shaped like features.parquet (with a split column)."""
    return synthetic_table({0: 10, 2: 14, 6: 26, 7: 10}, n_features=120, informative=12, signal=1.2, seed=3)
