"""The run directory: one folder holding every artifact of a run, with provenance.

Layout (SPEC §8)::

    runs/<name>/
      run.json          config hash, versions, git commit, seeds, per-stage status/timings
      config.yaml       the resolved configuration
      fingerprint.json  cohort fingerprint (validate)
      splits.json       the ONE patient-level split every stage uses (preprocess)
      preprocess/ segmentation/ masks/ features/ classification/ report.html

Writes are atomic. A stage writes into a hidden staging folder ``.partial/<stage>/`` that
mirrors the run layout; only when the stage succeeds are its entries moved into place
(one ``os.replace`` each). A failed stage therefore leaves nothing behind except its error
in ``run.json``. Resumable stages (segmentation training) keep their staging folder across
a crash so a rerun can pick up the last checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import yaml

from . import __version__
from .config import Config

PACKAGES = (
    "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "imbalanced-learn", "xgboost", "torch",
    "SimpleITK", "pyradiomics-bhklab", "opencv-python-headless", "typer", "PyYAML", "matplotlib",
    "joblib", "dask", "distributed",
)


# --------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file below a folder (sorted by relative path)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- provenance
def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    commit = res.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the run dir
class StageContext:
    """Where a running stage writes. ``path('segmentation/metrics.json')`` is inside staging."""

    def __init__(self, run: "RunDir", name: str, staging: Path):
        self.run = run
        self.name = name
        self.staging = staging
        self.info: dict[str, Any] = {}

    def path(self, rel: str | Path) -> Path:
        p = self.staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def dir(self, rel: str | Path) -> Path:
        p = self.staging / rel
        p.mkdir(parents=True, exist_ok=True)
        return p


class RunDir:
    """A run folder: provenance in ``run.json``, staged atomic stage outputs."""

    def __init__(self, path: str | Path, cfg: Config | None = None):
        self.path = Path(path).resolve()
        self.cfg = cfg
        self.path.mkdir(parents=True, exist_ok=True)
        if cfg is not None:
            self._init_provenance(cfg)

    # -- provenance ---------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def read_run_json(self) -> dict:
        if self.run_json.is_file():
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        return {}

    def _init_provenance(self, cfg: Config) -> None:
        info = self.read_run_json()
        info.update({
            "cervirad_version": __version__,
            "config_hash": cfg.hash(),
            "git_commit": git_commit(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "seeds": {"run": cfg.run.seed, "demo_data": cfg.data.demo_seed},
        })
        info.setdefault("created", _now())
        info.setdefault("stages", {})
        write_json(self.run_json, info)
        write_text(self.path / "config.yaml", cfg.to_yaml())

    def update_stage(self, name: str, **fields: Any) -> None:
        info = self.read_run_json()
        info.setdefault("stages", {}).setdefault(name, {}).update(fields)
        write_json(self.run_json, info)

    def stage_record(self, name: str) -> dict:
        return self.read_run_json().get("stages", {}).get(name, {})

    def is_current(self, name: str, key: str) -> bool:
        """True when stage ``name`` finished with the same inputs/settings ``key``."""
        rec = self.stage_record(name)
        return rec.get("status") == "done" and rec.get("key") == key

    # -- files --------------------------------------------------------------
    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def require(self, rel: str, hint: str) -> Path:
        from .errors import InputError

        p = self.path / rel
        if not p.exists():
            raise InputError(f"Run directory '{self.path}' has no '{rel}'; {hint}.")
        return p

    # -- stages -------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, key: str | None = None, resumable: bool = False,
              replace: tuple[str, ...] = ()) -> Iterator[StageContext]:
        """Run a stage: stage into ``.partial/<name>``, promote on success, log to run.json.

        Promotion merges folders entry by entry; run-relative folders named in ``replace`` are
        owned by this stage and replaced whole, so no file of an earlier run stays behind.
        """
        staging = self.path / ".partial" / name
        if staging.exists() and not resumable:
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(self, name, staging)
        t0 = time.perf_counter()
        self.update_stage(name, status="running", started=_now(), key=key, error=None)
        try:
            yield ctx
        except BaseException as e:
            from .errors import CerviradError

            msg = str(e) if isinstance(e, CerviradError) else f"{type(e).__name__}: {e}"
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            self.update_stage(name, status=status, error=msg, seconds=round(time.perf_counter() - t0, 3))
            if not resumable or isinstance(e, CerviradError):
                shutil.rmtree(staging, ignore_errors=True)
                self._drop_empty_partial()
            raise
        for rel in replace:
            if (staging / rel).exists() and (self.path / rel).is_dir():
                shutil.rmtree(self.path / rel)
        self._promote(staging)
        self.update_stage(name, status="done", finished=_now(), seconds=round(time.perf_counter() - t0, 3),
                          **ctx.info)

    def _promote(self, staging: Path) -> None:
        for entry in sorted(staging.iterdir()):
            self._move_into(entry, self.path / entry.name)
        shutil.rmtree(staging, ignore_errors=True)
        self._drop_empty_partial()

    def _drop_empty_partial(self) -> None:
        parent = self.path / ".partial"
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()

    def _move_into(self, src: Path, dst: Path) -> None:
        """Move ``src`` onto ``dst``; folders merge entry by entry, files replace atomically."""
        if src.is_dir() and dst.is_dir():
            for child in sorted(src.iterdir()):
                self._move_into(child, dst / child.name)
            return
        if dst.is_dir() and not src.is_dir():
            shutil.rmtree(dst)
        elif dst.exists() and src.is_dir():
            dst.unlink()
        os.replace(src, dst)


def open_run(cfg: Config, run_dir: str | Path | None) -> RunDir:
    """The run folder for ``cfg``: ``--run-dir`` if given, else ``<runs_root>/<run.name>``."""
    path = Path(run_dir) if run_dir else Path(cfg.run.runs_root) / cfg.run.name
    return RunDir(path, cfg)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **{"dpi": 110, "bbox_inches": "tight", **kwargs})
    plt.close(fig)
    return path


def load_yaml(path: str | Path) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))

