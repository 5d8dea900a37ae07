"""A tiny end-to-end run-all, shared by the pipeline and report tests (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

E2E_OVERRIDES = [
    "data.demo_patients=30",
    "preprocess.spacing=[1.4,1.4,4.0]",
    "preprocess.slice_size=128",
    "segmentation.epochs=2",
    "segmentation.plan_keep=[segmentation.folds]",  # 25 development patients: the plan would train 5 folds
    "segmentation.budget_minutes=null",  # epochs as set, not from a timing probe (machine-dependent)
    "segmentation.tta_mirror=false",  # 4x inference; mirroring has its own tests (tests/segmentation/test_tta.py)
    "segmentation.max_train_slices_per_epoch=24",
    "segmentation.bootstrap=100",
    "segmentation.n_overlays=2",
    f"features.radiomics_params={REPO / 'tests' / 'fixtures' / 'radiomics_original.yaml'}",
    "classification.k_grid=[10]",
    "classification.cv_folds=3",
    "classification.bootstrap=100",
    "classification.grids={rf: {n_estimators: [50], max_depth: [null], min_samples_split: [2]}, "
    "xgboost: {n_estimators: [50], max_depth: [3], learning_rate: [0.1]}, svm: {C: [1.0], gamma: [scale]}, "
    "lr: {C: [1.0]}}",
    "execution.n_jobs=2",
    "classification.targets=[pathologic_typing,large_cell]",  # one binary sub-task: its report section
    "classification.ablation=true",
]


def run_all_cmd(run_dir: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "cervirad.cli", "run-all", "--config", str(REPO / "configs" / "demo.yaml"),
           "--run-dir", str(run_dir)]
    for o in E2E_OVERRIDES:
        cmd += ["--set", o]
    return cmd + list(extra)


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory) -> Path:
    """An uninterrupted run-all on a 30-patient demo cohort (128 px slices, tiny grids)."""
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    res = subprocess.run(run_all_cmd(run_dir), capture_output=True, text=True, encoding="utf-8", env=env(),
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir / "run-all.stdout").write_text(res.stdout + res.stderr, encoding="utf-8")
    return run_dir


def read_json(p: Path) -> dict:
    return json.loads(p.read_text(encoding="utf-8"))
