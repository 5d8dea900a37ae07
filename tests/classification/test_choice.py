"""Choosing the final model (issue 23 item 7): the one-standard-error rule with ddof = 1, the Nadeau-Bengio
corrected SE and an explicit parsimony order; in nested CV the choice is made inside every outer fold."""
from __future__ import annotations

import numpy as np
import pytest

from cervirad.classification.core import Result, choose_model
from cervirad.classifiers import parsimony_order
from cervirad.classification.search import SearchResult


def search(fold_scores, n_candidates: int = 12) -> SearchResult:
    folds = np.asarray(fold_scores, float)
    cv = {"params": [{}] * n_candidates, "mean_test_score": np.full(n_candidates, folds.mean() - 0.05),
          **{f"split{i}_test_score": np.full(n_candidates, v - 0.05) for i, v in enumerate(folds)}}
    for i, v in enumerate(folds):
        cv[f"split{i}_test_score"][3] = v
    cv["mean_test_score"][3] = folds.mean()
    return SearchResult({}, float(folds.mean()), None, cv, 3)


def holdout(searches: dict) -> Result:
    return Result("test_split", np.zeros(2, int), np.array(["a", "b"]), {m: [np.zeros((2, 2))] for m in searches},
                  searches)


NOISY = [0.70, 0.90, 0.75, 0.85, 0.80]  # mean 0.80, SD (ddof 1) 0.079


def test_one_se_rule_uses_ddof_1_the_corrected_se_and_the_parsimony_order():
    res = holdout({"rf": search(NOISY), "xgboost": search([0.75] * 5), "lr": search([0.74, 0.78, 0.76, 0.72, 0.80])})
    c = choose_model(res)
    se = np.std(NOISY, ddof=1) * np.sqrt(1 / 5 + 1 / 4)
    assert c["evidence"]["rf"]["inner_cv_se_corrected"] == pytest.approx(se)
    assert c["evidence"]["rf"]["inner_cv_sd"] == pytest.approx(np.std(NOISY, ddof=1))
    assert c["model"] == "lr" and "one-standard-error" in c["rule"] and "lr < rf < xgboost" in c["rule"]
    # the uncorrected SE (SD / sqrt(5) = 0.035) would have left lr (0.76) out; the corrected one (0.053) keeps it
    assert 0.80 - np.std(NOISY, ddof=1) / np.sqrt(5) > 0.76 > 0.80 - se


def test_parsimony_order_not_grid_size_breaks_the_tie():
    """svm and rf with the same number of candidates: the order decides (grid size no longer does)."""
    assert parsimony_order().index("svm") < parsimony_order().index("rf")
    c = choose_model(holdout({"rf": search(NOISY, 12), "svm": search([0.79] * 5, 12)}))
    assert c["model"] == "svm"


def test_a_clear_winner_stays_the_winner():
    c = choose_model(holdout({"rf": search([0.9, 0.91, 0.89, 0.9, 0.9], 864), "lr": search([0.7] * 5, 8)}))
    assert c["model"] == "rf"


def test_nested_cv_best_is_the_procedure_not_the_best_of_four():
    """best.* in nested CV scores the model chosen inside each outer fold - here the worse model in one fold -
    not the highest of the models' outer-fold scores (the winner's curse)."""
    from types import SimpleNamespace

    from cervirad.classification.scores import model_metrics

    y = np.array([0, 1] * 10)
    good, bad = np.eye(2)[y] * 0.8 + 0.1, np.eye(2)[1 - y] * 0.8 + 0.1
    folds = [np.arange(0, 10), np.arange(10, 20)]
    selected = good.copy()
    selected[folds[1]] = bad[folds[1]]  # fold 2 chose the bad model
    res = Result("nested_cv", y, np.arange(20).astype(str), {"rf": [bad], "lr": [good]}, {},
                 folds=[{"model": "lr", "chosen_in_fold": True}, {"model": "rf", "chosen_in_fold": True}],
                 outer=[(0, te, 10) for te in folds], selected=[selected], choice={"model": "lr", "rule": "r"})
    cc = SimpleNamespace(bootstrap=0, calibration="prior")
    m = model_metrics(y, res.probs, res.groups, res, cc, np.array([0, 1]), np.array([True, True]))
    assert m["lr.accuracy"]["value"] == 1.0 and m["best.accuracy"]["value"] == 0.5
    assert m["best.accuracy"]["ci_method"] == "nadeau_bengio" and m["chosen_in_outer_folds"] == {"rf": 1, "lr": 1}
