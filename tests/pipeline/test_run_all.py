"""End-to-end run-all: artifacts, resumability, kill -9 and resume (slow; CI runs them). The shared
end-to-end run is read-only: the rerun and kill -9 tests work on copies of it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cervirad.files import file_hash

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


def _stage_running(run_dir: Path, stage: str) -> bool:
    p = run_dir / "run.json"
    if not p.is_file():
        return False
    return json.loads(p.read_text(encoding="utf-8")).get("stages", {}).get(stage, {}).get("status") == "running"


def _stage_status(run_dir: Path, stage: str) -> str | None:
    return read_json(run_dir / "run.json")["stages"].get(stage, {}).get("status")


def _kill_when(cmd: list[str], ready, timeout: float = 600) -> None:
    """Start ``cmd``, wait until ``ready()`` holds, then kill -9 its whole process group."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                            start_new_session=True)
    try:
        t0 = time.time()
        while not ready():
            assert proc.poll() is None, "run-all finished before the kill point was reached"
            assert time.time() - t0 < timeout, "kill point never reached"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_9_and_resume_gives_the_same_numbers(e2e_run, tmp_path):
    """On a copy of the end-to-end run: train-seg redone (--from) and killed; resumed, and feature extraction
    redone (--from; the copy's per-case feature cache removed) and killed; then finished: the same numbers."""
    run_dir = copy_run(e2e_run, tmp_path / "run")
    cache = run_dir / "cache" / "features"
    shutil.rmtree(cache)
    committed = {rel: file_hash(run_dir / rel) for rel in ("segmentation/metrics.json", "features/features.parquet")}
    # 1) killed during segmentation training, once a checkpoint exists
    ckpt = run_dir / ".partial" / "train-seg" / "segmentation" / "last.pt"
    _kill_when(run_all_cmd(run_dir, "--from", "train-seg"),
               lambda: _stage_running(run_dir, "train-seg") and ckpt.is_file())
    assert _stage_status(run_dir, "train-seg") == "running"  # nothing committed: the old results untouched
    assert file_hash(run_dir / "segmentation" / "metrics.json") == committed["segmentation/metrics.json"]
    # 2) resumed, and killed again half-way through feature extraction (cases land in the per-case cache first)
    _kill_when(run_all_cmd(run_dir, "--from", "features"),
               lambda: cache.is_dir() and len(list(cache.glob("*.json"))) >= 5)
    assert _stage_status(run_dir, "train-seg") == "done" and _stage_status(run_dir, "features") == "running"
    assert file_hash(run_dir / "features" / "features.parquet") == committed["features/features.parquet"]
    # 3) finish
    res = subprocess.run(run_all_cmd(run_dir), capture_output=True, text=True, encoding="utf-8", env=env(),
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (run_dir / ".partial").exists()
    assert read_json(run_dir / "segmentation" / "metrics.json")["resumed"] is True  # from the killed run's last.pt
    for rel in ("segmentation/metrics.json", "classification/metrics.json"):
        a, b = read_json(run_dir / rel), read_json(e2e_run / rel)
        keys = [k for k, v in b.items() if isinstance(v, dict) and "value" in v and "ms" not in k]
        assert keys
        for k in keys:
            assert a[k]["value"] == pytest.approx(b[k]["value"], abs=1e-9), (rel, k)
