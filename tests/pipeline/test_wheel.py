"""The built wheel carries its presets: an INSTALLED copy runs `run-all --config demo` outside the repo.

The wheel is built from a copy of the sources (no build/ folder in the work tree), installed with
``pip install --target SITE`` and put first on ``PYTHONPATH`` (tests/pipeline/e2e.py, once per
session); the check asserts that ``cervirad`` is imported from SITE (not from the editable
``src/``), and the console script ``SITE/bin/cervirad`` runs the suite's shared end-to-end run
from a directory outside the repository.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.e2e import REPO, outside

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
def test_installed_wheel_runs_demo_outside_the_repo(installed, e2e_root, e2e_run):
    """The suite's end-to-end run IS the installed wheel's `run-all --config demo` (tests/pipeline/e2e.py)."""
    script = installed / "bin" / "cervirad"
    assert script.is_file()
    assert REPO.resolve() not in outside(e2e_root).resolve().parents
    assert (e2e_run / "run.json").is_file()
    # stdout and stderr went to a file: no progress bars (carriage returns), progress as log lines ending at 100 %
    log = (e2e_root / "run.log").read_text(encoding="utf-8")
    assert "\r" not in log
    assert "extract-features: " in log and "(100 %) done" in log
