"""The suite's one end-to-end run, built by the INSTALLED wheel from outside the repository.

``python tests/pipeline/e2e.py ROOT [--wheel] [--run]``: ``--wheel`` builds the wheel from a copy
of the sources (no build/ folder in the work tree) and installs it with ``pip install --target
ROOT/site``; ``--run`` (once the wheel is there) runs ``ROOT/site/bin/cervirad run-all --config
demo`` from ``ROOT/elsewhere`` on a 30-patient demo cohort into ``ROOT/run``. Each step leaves
``site.rc``/``run.rc`` (its exit status) and ``site.log``/``run.log`` (what it printed).

:func:`start` launches it in the background, once per test session whichever pytest-xdist
worker asks (a file lock and the ``launched`` file decide), as soon as collection shows that a
selected test needs it, so the other tests run while it builds; :func:`wait` is what the
fixtures call. The module imports nothing from pytest, so it runs as a plain script.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
# for tests that redo classify on a copy of the run anyway: what reruns is their subject, not the classifier
ONE_CLASSIFIER = ["classification.models=[lr]", "classification.targets=[pathologic_typing]",
                  "classification.ablation=false", "classification.permutation_repeats=1"]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
TIMEOUT = 1500  # seconds, for the whole build (wheel + run-all) on a busy 2-core machine


def signing_key(root: Path) -> Path:
    """The throw-away signing key of one test session (shared by its xdist workers and this build)."""
    return root / "signing" / "signing.key"


def wheel_env(root: Path) -> dict:
    """The environment of the installed copy: only SITE on PYTHONPATH; progress left as a user gets it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TQDM_DISABLE")}
    return {**env, "PYTHONPATH": str(root / "site"), "PYTHONUNBUFFERED": "1",
            "CERVIRAD_KEY_FILE": str(signing_key(root))}


def outside(root: Path) -> Path:
    """The working directory of the installed copy's run: outside the repository."""
    return root / "elsewhere"


def run_all_args(*extra: str) -> list[str]:
    """``run-all --config demo`` with the suite's overrides (the caller adds the program and --run-dir)."""
    args = ["run-all", "--config", "demo"]
    for o in E2E_OVERRIDES:
        args += ["--set", o]
    return args + list(extra)


def _step(root: Path, name: str, cmds: list[list[str]], **kw) -> bool:
    """Run ``cmds`` one after another, output to ROOT/NAME.log; ROOT/NAME.rc gets the first failing status."""
    rc = 0
    with open(root / f"{name}.log", "w", encoding="utf-8") as log:
        for cmd in cmds:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **kw).returncode
            if rc:
                break
    (root / f"{name}.rc.tmp").write_text(str(rc), encoding="utf-8")
    os.replace(root / f"{name}.rc.tmp", root / f"{name}.rc")
    return rc == 0


def build(root: Path, wheel: bool, run: bool) -> int:
    if wheel:
        tmp = root / "wheel"
        src = tmp / "project"
        src.mkdir(parents=True)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        install = (f"import glob, subprocess, sys; (w,) = glob.glob({str(tmp / 'dist' / 'cervirad-*.whl')!r}); "
                   f"sys.exit(subprocess.run({PIP!r} + ['install', '--no-deps', '--no-index', '--target', "
                   f"{str(root / 'site')!r}, w]).returncode)")
        _step(root, "site", [
            PIP + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src)],
            [sys.executable, "-c", install],
        ])
    if not run:
        return 0
    if wait(root, "site")[0] != 0:
        return 1
    outside(root).mkdir()
    ok = _step(root, "run", [[str(root / "site" / "bin" / "cervirad"), *run_all_args("--run-dir", str(root / "run"))]],
               cwd=outside(root), env=wheel_env(root))
    return 0 if ok else 1


# --------------------------------------------------------------------------- from the test session
def start(root: Path, run: bool) -> None:
    """Launch what is not launched yet (the wheel; with ``run``, the run-all too) in the background,
    once per session whichever process asks (a file lock and the ``launched`` file decide)."""
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "start.lock")):
        launched = root / "launched"
        lines = launched.read_text(encoding="utf-8").split() if launched.exists() else []
        steps = [s for s in ("wheel", "run") if s not in lines[1::2] and (s == "wheel" or run)]
        if not steps:
            return
        env = {**os.environ, "CERVIRAD_KEY_FILE": str(signing_key(root))}
        proc = subprocess.Popen([sys.executable, str(Path(__file__)), str(root), *(f"--{s}" for s in steps)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=root, env=env, start_new_session=True)
        with open(launched, "a", encoding="utf-8") as fh:
            fh.writelines(f"{proc.pid} {s}\n" for s in steps)


def wait(root: Path, step: str, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Wait for ROOT/STEP.rc (step "site" or "run"): (exit status, the tail of what it printed)."""
    t0 = time.monotonic()
    rc = root / f"{step}.rc"
    while not rc.exists():
        if time.monotonic() - t0 > timeout:
            return -1, f"the background build did not finish {step} within {timeout:.0f} s"
        site = root / "site.rc"
        if step == "run" and site.exists() and site.read_text(encoding="utf-8") != "0":
            rc = site
            break
        time.sleep(1)
    log = rc.with_name(rc.name[:-len(".rc")] + ".log")
    return int(rc.read_text(encoding="utf-8")), log.read_text(encoding="utf-8", errors="replace")[-3000:]


def stop(root: Path) -> None:
    """End the background builds still going (at the end of the session, after every worker)."""
    launched = root / "launched"
    if not launched.exists():
        return
    lines = launched.read_text(encoding="utf-8").split()
    for pid, step in zip(lines[::2], lines[1::2]):
        if not (root / ("site.rc" if step == "wheel" else "run.rc")).exists():
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]), "--wheel" in sys.argv[2:], "--run" in sys.argv[2:]))
