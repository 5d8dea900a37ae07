"""The two-scanner demo through `cervirad classify` with ComBat (issue 24; slow: CI runs it).

validate -> preprocess -> features -> classify on 40 demo patients, 43 % of them on a second
scanner: the batch effect of the selected features must fall and the macro AUC with ComBat must
not be worse than without beyond the paired bootstrap CI; the harmonised model refuses an unseen
scanner unless asked to harmonise it transductively.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from cervirad.errors import InputError

from .conftest import env
from .e2e import REPO

pytestmark = pytest.mark.slow

OVERRIDES = [
    "data.demo_patients=40", "data.demo_scanners=2", "data.batch_column=scanner", "data.batch_min_patients=10",
    "classification.harmonize=combat", "preprocess.spacing=[1.4,1.4,4.0]", "preprocess.slice_size=128",
    f"features.radiomics_params={REPO / 'tests' / 'fixtures' / 'radiomics_original.yaml'}",
    "classification.models=[lr,rf]", "classification.k_grid=[10]", "classification.cv_folds=3",
    "classification.bootstrap=200", "classification.permutation_repeats=2",
    "classification.grids={rf: {n_estimators: [50], max_depth: [null], min_samples_split: [2]}, lr: {C: [1.0]}}",
    "execution.n_jobs=2",
]


def test_two_scanner_demo_batch_effect_falls_and_auc_holds(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cervirad.cli", "classify", "--config", str(REPO / "configs" / "demo.yaml"),
           "--run-dir", str(run)]
    for o in OVERRIDES:
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", env=env(), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    fp = json.loads((run / "fingerprint.json").read_text(encoding="utf-8"))
    assert set(fp["batches"]) == {"Siemens Skyra 3T", "Philips Ingenia 3T"} and sum(fp["batches"].values()) == 40
    h = json.loads((run / "classification" / "harmonization.json").read_text(encoding="utf-8"))
    fit, fit_all = h["batch_effect"]["fit"]["summary"], h["batch_effect"]["fit"]["all_image_features"]
    assert fit["eta2_median_after"] < 0.5 * fit["eta2_median_before"]  # ComBat fitted on these rows
    assert fit_all["eta2_median_after"] < 0.5 * fit_all["eta2_median_before"]
    assert fit_all["n_kw_p_below_0.05_after"] < fit_all["n_kw_p_below_0.05_before"]
    test_all = h["batch_effect"]["test"]["all_image_features"]  # 6 patients the frozen ComBat never saw
    assert test_all["n_kw_p_below_0.05_after"] <= test_all["n_kw_p_below_0.05_before"]
    with_, without = h["metrics"]["with"]["auc_macro"], h["metrics"]["without"]["auc_macro"]
    assert with_["value"] >= without["ci_low"], (with_, without)  # not worse than without beyond its CI
    assert h["metrics"]["difference"]["auc_macro"]["n_boot_valid"] > 0
    card = json.loads((run / "classification" / "model_card.json").read_text(encoding="utf-8"))
    assert card["batch_levels"] == sorted(fp["batches"]) and card["feature_columns"][-1] == "__batch__"

    from cervirad.classification.predict import predict_table

    table = pd.read_parquet(run / "features" / "features.parquet")
    assert len(predict_table(run / "classification", table)) == 40  # known scanners: frozen estimates
    new = table.assign(batch="Another scanner")
    with pytest.raises(InputError, match="not seen in development"):
        predict_table(run / "classification", new)
    pred = predict_table(run / "classification", new, harmonize=True)  # transductive, no labels used
    assert pred["predicted"].notna().all()
