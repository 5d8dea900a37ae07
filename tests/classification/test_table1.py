"""Table 1: counts, Wilson intervals, medians and missing values per split and class."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cervirad.classification.table1 import display, median_ci, table1, wilson


def test_wilson_interval_known_values():
    assert wilson(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson(0, 10) == pytest.approx((0.0, 3.8415 / 13.8415), abs=1e-4)  # upper = z^2 / (n + z^2)
    assert wilson(10, 10)[1] == pytest.approx(1.0)
    lo, hi = wilson(3, 4)
    assert lo < 0.75 < hi


@pytest.fixture
def small():
    df = pd.DataFrame({
        "patient_id": list("abcdefgh"), "label": [6, 6, 6, 6, 7, 7, 0, 0],
        "clin_age": [40, 50, 60, np.nan, 30, 70, 45, 55],
        "clin_hpv_status": [1, 1, 0, 1, np.nan, 0, 1, 1],
        "clin_figo_stage": [3, 8, 10.5, 13, 1, np.nan, 6, 4],
        "clin_lymph_node_metastasis": [0, 1, 0, 0, 1, 1, 0, 0],
    })
    parts = pd.Series(["train", "train", "val", "test", "train", "test", "train", "val"])
    return df, parts


def test_counts_percentages_and_missing_per_group(small):
    df, parts = small
    t = table1(df, "label", parts, n_boot=200, seed=0).set_index(["variable", "level", "group"])
    hpv = t.loc[("hpv_status", "positive", "all")]
    assert (hpv["count"], hpv["n_group"], hpv["percent"]) == (5, 8, 62.5)
    assert (hpv["ci_low"], hpv["ci_high"]) == pytest.approx(tuple(100 * v for v in wilson(5, 8)), abs=1e-4)
    assert t.loc[("hpv_status", "missing", "all"), "count"] == 1
    assert t.loc[("hpv_status", "missing", "class 7"), "count"] == 1
    # FIGO ranks 3, 4 -> I; 6, 8 -> II; 10.5 -> III; 13 -> IV; one missing
    figo = {lv: t.loc[("figo_stage", lv, "all"), "count"] for lv in ("I", "II", "III", "IV", "missing")}
    assert figo == {"I": 3, "II": 2, "III": 1, "IV": 1, "missing": 1}
    assert t.loc[("lymph_node_metastasis", "yes", "test"), "count"] == 1  # patients d (0) and f (1)
    assert t.loc[("lymph_node_metastasis", "yes", "train+val"), "n_group"] == 6
    age = t.loc[("age", "median [IQR]", "all")]
    assert age["count"] == 7 and age["median"] == 50 and (age["q1"], age["q3"]) == (42.5, 57.5)
    assert age["ci_low"] <= 50 <= age["ci_high"]
    assert t.loc[("age", "missing", "class 6"), "count"] == 1
    # levels plus missing add up to the group for every categorical variable and group
    cat = t.reset_index()
    cat = cat[cat["variable"] != "age"]
    sums = cat.groupby(["variable", "group"]).agg(total=("count", "sum"), n=("n_group", "first"))
    assert (sums["total"] == sums["n"]).all()


def test_median_ci_and_display(small):
    v = np.arange(1, 101, dtype=float)
    lo, hi = median_ci(v, 500, 0)
    assert lo < 50.5 < hi and hi - lo < 25
    assert np.isnan(median_ci(np.array([]), 100, 0)[0])
    df, parts = small
    wide = display(table1(df, "label", parts, 100, 0))
    assert list(wide.columns[:5]) == ["variable", "level", "all (n=8)", "train+val (n=6)", "test (n=2)"]
    row = wide[(wide.variable == "hpv_status") & (wide.level == "positive")].iloc[0]
    assert row["all (n=8)"].startswith("5 (62 %) [")
