"""Real radiomics tables (radMLBench subset in ../shared/data): nested-CV AUC above a measured floor.

Measured with this test's settings (LR, ANOVA/RFE selection, k in {10, 30}, 3x3 nested CV):
see the floors below; the full four-model default run is in the stage report. The floors
sit ~0.1 under the measured values so a regression (leak fixed the wrong way, a broken
selector) fails while seed noise does not.
"""
from __future__ import annotations

import json

import pytest

from cervirad.pipeline import classify_table as run_table
from cervirad.config import load_config
from tests.conftest import require_shared

SETTINGS = ["execution.n_jobs=2", "classification.models=[lr]", "classification.selectors=[anova,rfe]",
            "classification.k_grid=[10,30]", "classification.outer_folds=3", "classification.cv_folds=3",
            "classification.bootstrap=200", "classification.permutation_repeats=2"]


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name,floor", [("WORC-Lipo", 0.70), ("Deng2023", 0.70)])
def test_radmlbench_auc_floor(name, floor, tmp_path):
    table = require_shared("radiomics_tabular/radmlbench_subset") / f"{name}.csv.gz"
    s = run_table(load_config(None, SETTINGS), table, "ID", "Target", tmp_path)
    auc = json.loads((tmp_path / "classification" / "metrics.json").read_text(encoding="utf-8"))["lr.auc_macro"]
    print(f"{name}: LR nested-CV AUC {auc['value']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]")
    assert auc["value"] >= floor and auc["ci_low"] < auc["value"] < auc["ci_high"]
    assert s["classes"] == [0, 1] and s["evaluation"] == "nested_cv"
