"""What reruns on the real stage table, on copies of the suite's end-to-end run (slow; CI runs them):
file contents decide, outputs are checked, one process per run folder, a killed run's lock is taken
over. (Individual commands: test_commands.py; kill -9 and resume: test_kill.py.)"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from cervirad.config import load_config
from cervirad.pipeline import run_stages

from .conftest import cli, copy_run, env, read_json, run_all_cmd
from .e2e import E2E_OVERRIDES, ONE_CLASSIFIER, REPO

pytestmark = pytest.mark.slow
FIXTURE_PARAMS = REPO / "tests" / "fixtures" / "radiomics_original.yaml"


def e2e_config(*extra: str):
    return load_config(REPO / "configs" / "demo.yaml", [*E2E_OVERRIDES, *extra])


def test_contents_decide_what_reruns(copied_run, tmp_path):
    run = copied_run
    assert run_stages(e2e_config(), run) == {}  # a moved run with the same bytes is up to date
    # the radiomics parameter file: same bytes at another path change nothing, other bytes rerun features on
    params = tmp_path / "params.yaml"
    shutil.copy(FIXTURE_PARAMS, params)
    assert run_stages(e2e_config(f"features.radiomics_params={params}"), run) == {}
    p = yaml.safe_load(FIXTURE_PARAMS.read_text(encoding="utf-8"))
    del p["featureClass"]["glcm"]
    params.write_text(yaml.safe_dump(p), encoding="utf-8")
    cfg = e2e_config(f"features.radiomics_params={params}", *ONE_CLASSIFIER)
    ran = run_stages(cfg, run)
    assert set(ran) == {"features", "features-predicted", "classify", "report"}
    cols = pd.read_parquet(run.features_table("manual")).columns
    assert not any("_glcm_" in c for c in cols) and any("_glrlm_" in c for c in cols)
    # an output removed by hand: that stage and what reads it
    before = run.stage_record("classify")["outputs"]
    shutil.rmtree(run.classification_dir)
    ran = set(run_stages(cfg, run))
    # the report reruns exactly when the files classify rewrote differ (summary.json records timings, which can
    # repeat to the digit): contents decide, not the fact that classify ran
    assert ran == ({"classify", "report"} if run.stage_record("classify")["outputs"] != before else {"classify"})
    assert (run.classification_dir / "metrics.json").is_file()
    # a scoring setting: train-seg's scores are redone from its per-patient results (nothing retrained, the
    # masks unchanged, so neither feature stage nor classify reruns); the report shows the new intervals
    model = run.seg_model().read_bytes()
    ran = run_stages(e2e_config(f"features.radiomics_params={params}", *ONE_CLASSIFIER, "segmentation.bootstrap=60"),
                     run)
    assert set(ran) == {"train-seg", "report"}, ran
    assert run.stage_record("train-seg")["rescored"] is True and run.seg_model().read_bytes() == model
    assert read_json(run.seg_metrics())["dice"]["value"] is not None


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, "the first process ended before the check point"
        assert time.time() - t0 < timeout, "check point never reached"
        time.sleep(0.05)


def test_one_process_per_run_folder_and_a_killed_lock_is_taken_over(e2e_run, tmp_path):
    """On a copy of the end-to-end run: `preprocess --force` holds the lock while run-all is refused;
    `run-all --from train-seg` killed -9 inside train-seg leaves its lock, which the next command takes over."""
    run_dir = copy_run(e2e_run, tmp_path / "run")
    lock = run_dir / ".lock"
    sets = [a for o in E2E_OVERRIDES for a in ("--set", o)]
    preprocess = [sys.executable, "-m", "cervirad.cli", "preprocess", "--config", str(REPO / "configs" / "demo.yaml"),
                  "--run-dir", str(run_dir), *sets]
    first = subprocess.Popen([*preprocess, "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    _wait_for(lambda: lock.is_file() and lock.read_text(encoding="utf-8").strip().isdigit(), first)
    t0 = time.perf_counter()
    second = subprocess.run(run_all_cmd(run_dir), capture_output=True, text=True, encoding="utf-8", env=env(),
                            timeout=120)
    assert second.returncode == 2 and time.perf_counter() - t0 < 30
    assert f"in use by another cervirad process (pid {first.pid})" in second.stderr, second.stderr
    err = first.communicate(timeout=300)[1].decode("utf-8", "replace")
    assert first.returncode == 0, err[-2000:]  # the first one is not disturbed
    assert "preprocess" in err and "forced (--force)" in err, err[-2000:]  # it did the work, not a no-op
    info = read_json(run_dir / "run.json")
    for name in ("validate", "preprocess"):
        rec = info["stages"][name]
        assert rec["status"] == "done" and all((run_dir / rel).exists() for rel in rec["outputs"]), name
    assert not lock.exists() and not (run_dir / ".partial").exists()
    # kill -9 inside a stage: the lock file stays behind, and the next run takes it over
    killed = subprocess.Popen(run_all_cmd(run_dir, "--from", "train-seg"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env(), start_new_session=True)
    try:
        _wait_for(lambda: lock.is_file() and read_json(run_dir / "run.json")["stages"].get("train-seg", {})
                  .get("status") == "running", killed)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    assert lock.read_text(encoding="utf-8").strip() == str(killed.pid)
    res = cli(*preprocess[3:])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "nothing to redo" in res.stderr and not lock.exists()
