"""The 9 histogram features against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cervirad.features.histogram import (gray_histogram, histogram_features, lesion_histogram_features,
                                         to_gray_levels)


@pytest.fixture
def four_voxels():
    # gray levels 10, 10, 20, 40 -> p(10) = 0.5, p(20) = 0.25, p(40) = 0.25
    counts = np.zeros(256)
    counts[[10, 20, 40]] = [2, 1, 1]
    return histogram_features(counts)


def test_moments_by_hand(four_voxels):
    f = four_voxels
    # mean = (10 + 10 + 20 + 40) / 4 = 20; deviations -10, -10, 0, 20
    assert f["mean"] == pytest.approx(20.0)
    var = (100 + 100 + 0 + 400) / 4  # 150
    assert f["std"] == pytest.approx(math.sqrt(var))
    assert f["skewness"] == pytest.approx((-1000 - 1000 + 0 + 8000) / 4 / var ** 1.5)  # 1500 / 150^1.5
    assert f["kurtosis"] == pytest.approx((10000 + 10000 + 0 + 160000) / 4 / var ** 2 - 3)  # 45000/22500 - 3 = -1


def test_energy_entropy_by_hand(four_voxels):
    assert four_voxels["energy"] == pytest.approx(0.25 + 0.0625 + 0.0625)
    assert four_voxels["entropy"] == pytest.approx(1.5)  # 0.5*1 + 2 * 0.25*2


def test_order_statistics_by_hand(four_voxels):
    # cumulative: 0.5 at 10, 0.75 at 20, 1.0 at 40
    assert four_voxels["median"] == 10.0
    assert four_voxels["mode"] == 10.0
    assert four_voxels["iqr"] == 20.0 - 10.0  # Q3 = 20 (cdf reaches 0.75), Q1 = 10


def test_single_gray_level_has_zero_spread():
    counts = np.zeros(256)
    counts[77] = 5
    f = histogram_features(counts)
    assert (f["mean"], f["std"], f["skewness"], f["kurtosis"]) == (77.0, 0.0, 0.0, 0.0)
    assert (f["energy"], f["entropy"], f["median"], f["mode"], f["iqr"]) == (1.0, 0.0, 77.0, 77.0, 0.0)


def test_coarser_bins_use_lower_edges():
    counts = np.zeros(64)  # 4 gray levels per bin: bin k has value 4k
    counts[[2, 3]] = [1, 3]
    f = histogram_features(counts)
    assert f["mode"] == 12.0 and f["mean"] == pytest.approx((8 + 3 * 12) / 4)


def test_calchist_counts_only_masked_voxels():
    gray = np.array([[[0, 5], [5, 255]], [[5, 7], [255, 255]]], np.uint8)
    mask = np.array([[[1, 1], [0, 1]], [[1, 0], [0, 0]]], bool)
    counts = gray_histogram(gray, mask, 256)
    assert counts.sum() == 4 and counts[0] == 1 and counts[5] == 2 and counts[255] == 1 and counts[7] == 0


def test_gray_levels_window_and_clip():
    g = to_gray_levels(np.array([-5.0, 0.0, 5.0, 10.0, 99.0]), 0.0, 10.0)
    assert g.tolist() == [0, 0, 128, 255, 255]  # round(127.5) = 128 (half to even on .5 -> 128)
    assert to_gray_levels(np.ones(3), 1.0, 1.0).tolist() == [0, 0, 0]


def test_lesion_features_are_named_and_finite():
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (4, 16, 16))
    mask = np.zeros(vol.shape, bool)
    mask[1:3, 4:10, 4:10] = True
    f = lesion_histogram_features(vol, mask)
    assert sorted(f) == sorted(f"hist_{n}" for n in ("mean", "std", "skewness", "kurtosis", "energy", "entropy",
                                                      "median", "mode", "iqr"))
    assert all(np.isfinite(v) for v in f.values())


def test_empty_histogram_refused():
    with pytest.raises(ValueError, match="empty histogram"):
        histogram_features(np.zeros(256))
