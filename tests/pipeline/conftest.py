"""The suite's one end-to-end run (tests/pipeline/e2e.py), shared read-only by the pipeline and
report tests (slow): a test that changes a run works on a copy (:func:`copy_run`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import session_root

from .e2e import REPO, outside, run_all_args, wait

def run_all_cmd(run_dir: Path, *extra: str) -> list[str]:
    """The end-to-end run's command, through the source tree's package (``python -m cervirad.cli``)."""
    return [sys.executable, "-m", "cervirad.cli", *run_all_args("--run-dir", str(run_dir), *extra)]


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


def cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m cervirad.cli ARGS`` from the source tree, its output captured."""
    return subprocess.run([sys.executable, "-m", "cervirad.cli", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", env=env(), timeout=timeout)


def read_json(p: Path) -> dict:
    return json.loads(p.read_text(encoding="utf-8"))


def copy_run(run: Path, dst: Path) -> Path:
    """A private, writable copy of a finished run in another folder (paths change, contents do not)."""
    shutil.copytree(run, dst)
    return dst


@pytest.fixture
def copied_run(e2e_run, tmp_path):
    """A private copy of the finished e2e run, in another folder (paths change, contents do not)."""
    from cervirad.rundir import RunDir

    return RunDir(copy_run(e2e_run, tmp_path / "copy"))


@pytest.fixture(scope="session")
def e2e_root(request) -> Path:
    return session_root(request.config) / "e2e"


@pytest.fixture(scope="session")
def installed(e2e_root) -> Path:
    """SITE folder holding the wheel's cervirad package and its `bin/cervirad` console script."""
    rc, log = wait(e2e_root, "site")
    assert rc == 0, log
    return e2e_root / "site"


@pytest.fixture(scope="session")
def e2e_run(e2e_root, installed) -> Path:
    """An uninterrupted run-all of the INSTALLED wheel, run from outside the repository, on a 30-patient
    demo cohort (128 px slices, tiny grids); read-only: copy it (:func:`copy_run`) to change anything."""
    rc, log = wait(e2e_root, "run")
    assert rc == 0, log
    assert REPO.resolve() not in outside(e2e_root).resolve().parents
    run = e2e_root / "run"
    before = _stat_tree(run)
    yield run
    assert _stat_tree(run) == before, "a test changed the shared end-to-end run: it must work on a copy"


def _stat_tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}
