"""Shared fixtures: the real public data in ../shared/data, a tiny preprocessed demo run, and
what makes the suite share its expensive work across pytest-xdist workers (`make test` runs two).

A session-wide artifact (the tiny run, the signing key, the end-to-end run of tests/pipeline/e2e.py)
is built ONCE per test session: under xdist in the folder shared by the workers (the parent of
each worker's base temp), a file lock deciding who builds and the others waiting.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CERVIRAD_SHARED_DATA", REPO.parent / "shared" / "data"))
E2E_FIXTURES = {"e2e_run", "installed"}  # built in the background by tests/pipeline/e2e.py
# the longest modules of those that wait for the end-to-end run go out first (`make test` hands whole modules
# to its two xdist workers, in collection order), so that the two workers end together
E2E_FIRST = ("tests/pipeline/test_external.py::", "tests/pipeline/test_kill.py::", "tests/pipeline/test_resume.py::",
             "tests/pipeline/test_commands.py::")


def require_shared(sub: str = "") -> Path:
    """Path into ../shared/data; skip with a reason when absent (fail under CI=true)."""
    p = SHARED_DATA / sub
    if not p.exists():
        msg = f"real test data not found at {p} (set CERVIRAD_SHARED_DATA or place ../shared/data next to the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; under CI its absence is a failure")
        pytest.skip(msg)
    return p


def session_root(config: pytest.Config) -> Path:
    """The temp folder of the whole test session: every xdist worker's base temp lies inside it."""
    base = config._tmp_path_factory.getbasetemp()  # noqa: SLF001 (pytest's own session factory)
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(config: pytest.Config, name: str, build: Callable[[Path], None]) -> Path:
    """SESSION_ROOT/NAME, made by ``build(path)`` in exactly one process of the session."""
    from filelock import FileLock

    root = session_root(config)
    path, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.exists():
            pytest.fail(f"building {name} failed in another worker: {failed.read_text(encoding='utf-8')}")
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            try:
                build(path)
            except BaseException as e:
                failed.write_text(repr(e)[-2000:], encoding="utf-8")
                raise
            done.touch()
    return path


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
def tiny_run(request, tiny_cfg):
    """A run directory with a 12-patient demo cohort, validated and preprocessed (shared, read-only)."""
    from cervirad.pipeline import run_stages
    from cervirad.rundir import RunDir

    path = once(request.config, "tiny_run", lambda p: run_stages(tiny_cfg, RunDir(p), ["preprocess"]))
    return RunDir(path)


@pytest.fixture(scope="session", autouse=True)
def _signing_key(request):
    """Model signing uses a throw-away key, never the real ~/.config/cervirad/signing.key (set in
    os.environ so that CLI subprocesses inherit it); one key per session, so a model signed by one
    xdist worker (or by the background end-to-end build) loads in the other."""
    from tests.pipeline.e2e import signing_key

    key = signing_key(session_root(request.config) / "e2e")
    key.parent.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("CERVIRAD_KEY_FILE")
    os.environ["CERVIRAD_KEY_FILE"] = str(key)
    yield key
    if old is None:
        os.environ.pop("CERVIRAD_KEY_FILE", None)
    else:
        os.environ["CERVIRAD_KEY_FILE"] = old


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Start the end-to-end build in the background when a selected test needs it, and move the modules
    whose tests wait for it to the end, the longest first, so the others run meanwhile (the same order
    in every xdist worker)."""
    if config.option.collectonly:
        return
    needs = [it for it in items if E2E_FIXTURES & set(getattr(it, "fixturenames", ()))]
    if not needs:
        return
    from tests.pipeline import e2e

    e2e.start(session_root(config) / "e2e", run=any("e2e_run" in it.fixturenames for it in needs))
    modules = {it.nodeid.split("::")[0] for it in needs}  # whole modules: xdist hands out a module at once
    tail = [it for it in items if it.nodeid.split("::")[0] in modules]
    rank = lambda it: next((i for i, s in enumerate(E2E_FIRST) if s in it.nodeid), len(E2E_FIRST))  # noqa: E731
    items[:] = [it for it in items if it.nodeid.split("::")[0] not in modules] + sorted(tail, key=rank)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller (or a run without xdist) ends a background build still going when the session ends."""
    factory = getattr(config, "_tmp_path_factory", None)
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(factory, "_basetemp", None) is None:
        return  # a worker, or no base temp was ever made (so nothing was started)
    from tests.pipeline import e2e

    e2e.stop(session_root(config) / "e2e")
