"""Shared fixtures: the real public data in ../shared/data, and a tiny preprocessed demo run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CERVIRAD_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared(sub: str = "") -> Path:
    """Path into ../shared/data; skip with a reason when absent (fail under CI=true)."""
    p = SHARED_DATA / sub
    if not p.exists():
        msg = f"real test data not found at {p} (set CERVIRAD_SHARED_DATA or place ../shared/data next to the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; under CI its absence is a failure")
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def tiny_cfg():
    """Demo config shrunk for tests: 12 patients, a few epochs, small grids."""
    from cervirad.config import load_config

    return load_config(REPO / "configs" / "demo.yaml", [
        "data.demo_patients=12", "run.name=tiny", "execution.n_jobs=2",
        # 10 development patients: the plan would ask for 5-fold cross-validation (5x the training time)
        "segmentation.plan_keep=[segmentation.folds]",
        "segmentation.budget_minutes=null",  # epochs as set, not from a timing probe (machine-dependent)
        "segmentation.tta_mirror=false",  # 4x inference; mirroring has its own tests (test_tta.py)
    ])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_cfg):
    """A run directory with a 12-patient demo cohort, validated and preprocessed (shared, read-only)."""
    from cervirad.pipeline import run_stages
    from cervirad.rundir import RunDir

    run = RunDir(tmp_path_factory.mktemp("tiny_run"))
    run_stages(tiny_cfg, run, ["preprocess"])
    return run


@pytest.fixture(scope="session", autouse=True)
def _signing_key(tmp_path_factory):
    """Model signing uses a throw-away key, never the real ~/.config/cervirad/signing.key (set in
    os.environ so that CLI subprocesses inherit it)."""
    key = tmp_path_factory.mktemp("signing") / "signing.key"
    old = os.environ.get("CERVIRAD_KEY_FILE")
    os.environ["CERVIRAD_KEY_FILE"] = str(key)
    yield key
    if old is None:
        os.environ.pop("CERVIRAD_KEY_FILE", None)
    else:
        os.environ["CERVIRAD_KEY_FILE"] = old
