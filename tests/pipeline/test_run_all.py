"""End-to-end run-all: artifacts, and a rerun redoes nothing (slow; CI runs them). The shared
end-to-end run is read-only: the rerun works on a copy of it. (kill -9 and resume: test_kill.py.)"""
from __future__ import annotations

import subprocess
import time

import pytest

from .conftest import copy_run, env, read_json, run_all_cmd

pytestmark = pytest.mark.slow

ARTIFACTS = [
    "run.json", "config.yaml", "fingerprint.json", "splits.json",
    "segmentation/model.pt", "segmentation/metrics.json", "segmentation/per_patient.csv",
    "features/features.parquet", "features/features.csv", "features/errors.csv",
    "features/predicted/features.parquet",
    "classification/metrics.json", "classification/model.joblib", "classification/model_card.json",
    "report.html",
]


def test_run_all_writes_every_artifact(e2e_run):
    for rel in ARTIFACTS:
        assert (e2e_run / rel).exists(), rel
    splits = read_json(e2e_run / "splits.json")
    test_ids = set(splits["test"])
    assert not (set(splits["train"]) & test_ids or set(splits["val"]) & test_ids)
    masks = {p.name.split(".")[0] for p in (e2e_run / "masks").glob("*.nii.gz")}
    assert masks == test_ids  # predicted masks for exactly the test patients
    info = read_json(e2e_run / "run.json")
    assert "pipeline" not in info  # one record of what ran: stages[...]
    assert set(info["stages"]) == {"validate", "preprocess", "plan", "train-seg", "features", "features-predicted",
                                   "classify", "report"}
    for name, rec in info["stages"].items():
        assert rec["status"] == "done" and rec["key"] and rec["outputs"], name
        for rel, digest in rec["outputs"].items():  # what it wrote is there, byte for byte
            assert digest is None or (e2e_run / rel).exists(), (name, rel)
    assert not (e2e_run / ".lock").exists()
    m = read_json(e2e_run / "classification" / "metrics.json")
    acc = m["rf.accuracy"]
    assert 0.0 <= acc["ci_low"] <= acc["value"] <= acc["ci_high"] <= 1.0
    # issue 13's paper results: calibration, Table 1, a binary sub-task, the source ablation and share
    assert m["calibration_method"] == "prior" and "rf.calibration_slope" in m and m["table1_file"] == "table1.csv"
    assert "target.large_cell.auc_macro" in m and "ablation.clinical.auc_macro" in m
    assert "importance_share.radiomics.n_selected" in m
    for rel in ("table1.csv", "targets.json", "targets/large_cell/metrics.json", "ablation.json"):
        assert (e2e_run / "classification" / rel).is_file(), rel
    assert not (e2e_run / ".partial").exists()
    import pandas as pd

    feats = pd.read_parquet(e2e_run / "features" / "features.parquet")
    assert set(feats.patient_id) == set(splits["train"] + splits["val"] + splits["test"])
    assert dict(zip(feats.patient_id, feats.split)) == {p: k for k in ("train", "val", "test") for p in splits[k]}


def test_rerun_skips_unchanged_stages_and_from_redoes(e2e_run, tmp_path):
    run_dir = copy_run(e2e_run, tmp_path / "run")
    t = time.perf_counter()
    res = subprocess.run(run_all_cmd(run_dir), capture_output=True, text=True, encoding="utf-8", env=env(),
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "nothing to redo" in res.stdout
    assert time.perf_counter() - t < 60
    before = read_json(run_dir / "classification" / "metrics.json")
    res = subprocess.run(run_all_cmd(run_dir, "--from", "report"), capture_output=True, text=True,
                         encoding="utf-8", env=env(), timeout=300)
    assert res.returncode == 0 and "report" in res.stdout and "classify" not in res.stdout
    assert read_json(run_dir / "classification" / "metrics.json") == before
