"""AdaptiveSMOTE: neighbour count per fold, and the rule for one-member classes."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from cervirad.classification.smote import AdaptiveSMOTE


def _data(counts, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([[c] * n for c, n in counts.items()])
    return rng.normal(size=(len(y), 4)) + y[:, None], y


def test_neighbours_adapt_to_the_smallest_class():
    X, y = _data({0: 20, 1: 3, 2: 8})
    s = AdaptiveSMOTE(k_neighbors=5, random_state=0)
    Xr, yr = s.fit_resample(X, y)
    assert s.report_["k_neighbors"] == 2  # smallest class has 3 members
    assert np.bincount(yr).tolist() == [20, 20, 20]
    np.testing.assert_array_equal(Xr[: len(X)], X)  # originals kept, synthetic rows appended


@pytest.mark.parametrize("rule,expected", [("random", 12), ("none", 1)])
def test_single_member_class_is_handled_and_logged(rule, expected, caplog):
    X, y = _data({0: 12, 1: 1, 2: 5})
    with caplog.at_level(logging.WARNING):
        Xr, yr = AdaptiveSMOTE(singleton=rule, random_state=0).fit_resample(X, y)
    assert np.bincount(yr)[1] == expected and np.bincount(yr)[2] == 12
    assert "single training sample" in caplog.text


def test_bad_singleton_rule_is_refused():
    X, y = _data({0: 5, 1: 3})
    with pytest.raises(ValueError, match="singleton"):
        AdaptiveSMOTE(singleton="drop").fit_resample(X, y)


def test_single_member_log_says_the_values_are_codes(caplog):
    X, y = _data({0: 12, 1: 1, 2: 5})
    with caplog.at_level(logging.WARNING):
        AdaptiveSMOTE(random_state=0).fit_resample(X, y)
    assert "class code(s) [1]" in caplog.text


def test_stage_summary_reports_smote_by_class_label(tmp_path, fast_cfg):
    """Labels 0, 4, 6 are codes 0, 1, 2 inside; summary.json's SMOTE report speaks labels."""
    import json
    from dataclasses import replace

    from cervirad.io import write_table
    from cervirad.pipeline import classify_table
    from tests.classification.synthetic import synthetic_table

    df = synthetic_table({0: 24, 4: 10, 6: 6}, n_features=30, informative=6, signal=1.5, seed=1, label="Target")
    write_table(df.drop(columns="split"), tmp_path / "t.csv")
    cfg = replace(fast_cfg, classification=replace(fast_cfg.classification, models=("lr",), selectors=("anova",),
                                                   k_grid=(5,), outer_folds=2))
    s = classify_table(cfg, tmp_path / "t.csv", "patient_id", "Target", tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / "classification" / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["models"] == s["models"]
    rep = s["models"]["lr"]["smote"]
    assert s["classes"] == [0, 4, 6]
    assert set(rep["counts_before"]) == {"0", "4", "6"}  # not the codes "0", "1", "2"
    assert rep["counts_before"] == s["class_counts_fit"] == {"0": 24, "4": 10, "6": 6}
    assert rep["counts_after"] == {"0": 24, "4": 24, "6": 24}
