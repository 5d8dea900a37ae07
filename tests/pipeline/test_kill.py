"""kill -9 during run-all, twice, then a rerun: the same numbers as the uninterrupted run (slow; CI runs it).
It works on a copy of the suite's end-to-end run (the shared one is read-only)."""
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
