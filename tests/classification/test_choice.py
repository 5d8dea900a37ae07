"""Choosing the final model: robust to grid size (the largest grid must not win by construction)."""
from __future__ import annotations

import numpy as np

from cervirad.classification.core import Result, choose_model
from cervirad.classification.search import SearchResult


def search(mean: float, sd: float, n_candidates: int, folds: int = 5) -> SearchResult:
    means = np.full(n_candidates, mean - 0.05)
    means[0] = mean
    cv = {"params": [{}] * n_candidates, "mean_test_score": means, "std_test_score": np.full(n_candidates, sd),
          **{f"split{i}_test_score": means for i in range(folds)}}
    return SearchResult({}, mean, None, cv, 0)


def holdout(searches: dict) -> Result:
    return Result("test_split", np.zeros(2, int), np.array(["a", "b"]), {m: [np.zeros((2, 2))] for m in searches},
                  searches)


def test_one_se_rule_prefers_the_small_grid_within_noise():
    res = holdout({"rf": search(0.80, 0.10, 864), "xgboost": search(0.74, 0.05, 16), "lr": search(0.77, 0.05, 8)})
    c = choose_model(res)
    assert c["model"] == "lr" and "one-standard-error" in c["rule"]
    assert c["evidence"]["rf"]["candidates"] == 864
    assert abs(c["evidence"]["rf"]["inner_cv_se"] - 0.10 / np.sqrt(5)) < 1e-12
    # a clear winner stays the winner, however large its grid
    assert choose_model(holdout({"rf": search(0.90, 0.02, 864), "lr": search(0.70, 0.02, 8)}))["model"] == "rf"


def test_nested_cv_chooses_by_the_outer_folds_not_the_inner_maximum():
    y = np.array([0, 0, 1, 1, 2, 2])
    good = np.eye(3)[y]  # right on every outer row
    bad = np.eye(3)[[1, 2, 0, 2, 0, 1]]
    res = Result("nested_cv", y, np.arange(6).astype(str), {"rf": [bad], "lr": [good]},
                 {"rf": search(0.99, 0.01, 864), "lr": search(0.60, 0.01, 8)})
    c = choose_model(res, "f1_macro")
    assert c["model"] == "lr" and c["evidence"]["lr"]["outer_cv_score"] == 1.0
    assert c["evidence"]["rf"]["outer_cv_score"] == 0.0
    assert res.best_model == "lr"
