"""The built wheel carries its presets: an INSTALLED copy runs `run-all --config demo` outside the repo.

The wheel is built from a copy of the sources (no build/ folder in the work tree), installed with
``pip install --target SITE`` and put first on ``PYTHONPATH``; the check asserts that
``cervirad`` is imported from SITE (not from the editable ``src/``), and the console script
``SITE/bin/cervirad`` then runs from a directory outside the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import E2E_OVERRIDES, REPO

PACKAGED = REPO / "src" / "cervirad" / "configs"

CHECK = r"""
import json, sys
import cervirad, cervirad.cli.classification
from cervirad import presets
from cervirad.config import load_config
from cervirad.features.radiomics_ext import load_params
out = {"file": cervirad.__file__, "table": str(cervirad.cli.classification.TABLE_CONFIG), "config": {}, "radiomics": {}}
for n in presets.available("config"):
    load_config(n[:-len(".yaml")])
    out["config"][n] = str(presets.resolve(n))
for n in presets.available("radiomics"):
    load_params(n)
    out["radiomics"][n] = str(presets.resolve(n, kind="radiomics"))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """SITE folder holding the wheel's cervirad package and its `bin/cervirad` console script."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    res = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                                str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("cervirad-*.whl")
    site = tmp / "site"
    res = subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return site


def _env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TQDM_DISABLE")}
    return {**env, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}


def _outside(tmp_path: Path) -> Path:
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert REPO.resolve() not in work.resolve().parents
    return work


def test_installed_wheel_finds_every_preset(installed, tmp_path):
    res = subprocess.run([sys.executable, "-c", CHECK], cwd=_outside(tmp_path), env=_env(installed),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    site = installed.resolve()
    assert site in Path(out["file"]).resolve().parents  # the installed copy, not src/
    files = sorted(str(p.relative_to(PACKAGED)) for p in PACKAGED.rglob("*.yaml"))
    assert sorted([*out["config"], *out["radiomics"]]) == files  # every preset made it into the wheel
    for p in [out["table"], *out["config"].values(), *out["radiomics"].values()]:
        assert site in Path(p).resolve().parents, p


@pytest.mark.slow
def test_installed_wheel_runs_demo_outside_the_repo(installed, tmp_path):
    script = installed / "bin" / "cervirad"
    assert script.is_file()
    run_dir = tmp_path / "run"
    cmd = [str(script), "run-all", "--config", "demo", "--run-dir", str(run_dir)]
    for o in E2E_OVERRIDES + ["segmentation.epochs=1"]:
        cmd += ["--set", o]
    res = subprocess.run(cmd, cwd=_outside(tmp_path), env=_env(installed), capture_output=True, text=True,
                         encoding="utf-8", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "run.json").is_file()
    # stderr is a pipe: no progress bars (carriage returns), progress as log lines ending at 100 %
    log = res.stdout + res.stderr
    assert "\r" not in log
    assert "extract-features: " in log and "(100 %) done" in log
