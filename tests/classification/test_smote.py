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
