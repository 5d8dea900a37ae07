"""The pipeline's pieces and the grid search's equivalence with scikit-learn's GridSearchCV."""
from __future__ import annotations


import numpy as np
import pytest

from cervirad.classification import estimators as P
from cervirad.classification.data import load_table
from cervirad.classification.search import gridsearchcv_model, search
from cervirad.classifiers import make_classifier

from cervirad.config import with_overrides


@pytest.fixture(scope="module")
def table(demo_like):
    return load_table(demo_like, "patient_id", "Pathologic_typing", ("split",))


@pytest.mark.parametrize("model", ["rf", "xgboost", "lr"])
def test_search_scores_and_choice_equal_gridsearchcv(model, table, fast_cfg, tmp_path):
    cc = fast_cfg.classification
    ours = search(model, table.X, table.y, None, cc, 42, 1, str(tmp_path))
    ref = gridsearchcv_model(model, table.X, table.y, None, cc, 42, 1, None)
    ref_scores = {repr(sorted(p.items())): s for p, s in zip(ref.cv_results_["params"], ref.cv_results_["mean_test_score"])}
    our_scores = {repr(sorted(p.items())): s for p, s in zip(ours.cv_results_["params"], ours.cv_results_["mean_test_score"])}
    assert our_scores.keys() == ref_scores.keys()
    assert max(abs(our_scores[k] - ref_scores[k]) for k in ref_scores) == 0.0
    assert ours.best_params_ == ref.best_params_ and ours.best_score_ == ref.best_score_
    np.testing.assert_array_equal(ours.best_estimator_.predict_proba(table.X), ref.best_estimator_.predict_proba(table.X))


@pytest.mark.parametrize("method", ["rf", "anova", "rfe"])
def test_rankings_are_nested_and_computed_once_per_fold(method, table, tmp_path, monkeypatch):
    X = np.nan_to_num(table.X)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    calls = []
    real = P._rank
    monkeypatch.setattr(P, "_rank", lambda *a: calls.append(a[0]) or real(*a))
    small = P.RankSelector(method, 5, n_trees=20, cache_dir=str(tmp_path)).fit(X, table.y)
    large = P.RankSelector(method, 15, n_trees=20, cache_dir=str(tmp_path)).fit(X, table.y)
    assert small.support_.sum() == 5 and large.support_.sum() == 15
    assert np.all(large.support_[small.support_])  # top 5 within top 15
    assert calls == [method]  # the second k reused the cached ranking


def test_rankings_find_the_informative_columns(table):
    X = np.nan_to_num(table.X)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    for method in ("rf", "anova", "rfe"):
        top = np.argsort(-P.rank_features(method, X, table.y, n_trees=50))[:10]
        # the 12 informative columns come first, then 12 noisy copies of them, then pure noise
        assert np.mean(top < 24) >= 0.8, method


def test_drop_constant_thresholds():
    X = np.column_stack([np.ones(20), np.r_[np.zeros(19), 1.0], np.arange(20.0)])
    assert P.DropConstant(0.0).fit(X).support_.tolist() == [False, True, True]
    assert P.DropConstant(0.1).fit(X).support_.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="every feature column is constant"):
        P.DropConstant(0.0).fit(np.ones((5, 2)))


def test_xgboost_accepts_labels_that_are_not_0_to_c(table):
    y = np.array([2, 5, 9, 5])[table.y]
    clf = make_classifier("xgboost", 0).set_params(n_estimators=5).fit(np.nan_to_num(table.X), y)
    assert clf.classes_.tolist() == [2, 5, 9]
    assert set(clf.predict(np.nan_to_num(table.X))) <= {2, 5, 9}


def test_k_grid_is_capped_by_the_column_count():
    assert P.effective_k_grid((5, 10, 100), 30) == [5, 10, 30]
    assert P.effective_k_grid((5, 10), 30) == [5, 10]


def test_group_aware_folds_keep_a_patients_rows_together():
    y = np.repeat([0, 1], 20)
    groups = np.repeat(np.arange(20), 2)
    for tr, te in P.make_cv(y, groups, 5, 0):
        assert not set(groups[tr]) & set(groups[te])


def test_unknown_model_in_config_is_refused(fast_cfg):
    from cervirad.errors import ConfigError

    with pytest.raises(ConfigError, match=r"classification.models\[1\]': expected one of .* got 'knn'"):
        with_overrides(fast_cfg, ["classification.models=[rf,knn]"])
