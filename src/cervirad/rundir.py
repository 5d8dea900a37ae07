"""The run directory: one folder holding every artifact of a run, with provenance.

Layout (SPEC §8); every artifact name is spelled here and nowhere else (:class:`RunDir`
exposes them as named paths)::

    runs/<name>/
      run.json          provenance and THE record of what ran: per stage its key, status,
                        wall time, error and the hashes of the files it wrote
      config.yaml       the resolved configuration
      fingerprint.json  cohort fingerprint (validate)
      plan.yaml         the training recipe derived from the fingerprint (plan)
      splits.json       the ONE patient-level split every stage uses (preprocess)
      preprocess/ segmentation/ masks/ features/ classification/ report.html

Writes are atomic. A stage writes into a hidden staging folder ``.partial/<stage>/`` that
mirrors the run layout; only when the stage succeeds are its entries moved into place
(one ``os.replace`` each). A failed stage therefore leaves nothing behind except its error
in ``run.json``. Resumable stages (segmentation training) keep their staging folder across
a crash so a rerun can pick up the last checkpoint. One process at a time works on a run
folder (:meth:`RunDir.lock`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .config import Config
from .errors import CerviradError
from .jsonutil import jsonable

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
    """Strict JSON (NaN/inf written as null, numpy values as plain numbers: :func:`~cervirad.jsonutil.jsonable`)."""
    return write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def series_folder(p: Path) -> Path:
    """``folder#SeriesInstanceUID`` (a manifest's name for one series of a DICOM folder) -> folder."""
    if p.exists() or "#" not in p.name:
        return p
    return Path(str(p).rpartition("#")[0])


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file below a folder (sorted by relative path); a DICOM series
    named as ``folder#SeriesInstanceUID`` is hashed as its folder."""
    p = series_folder(Path(path))
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


# --------------------------------------------------------------------------- artifact names
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
LOCK_FILE = ".lock"
PARTIAL = ".partial"
FINGERPRINT = "fingerprint.json"
PLAN = "plan.yaml"
SPLITS = "splits.json"
PREPROCESS = "preprocess"
SEGMENTATION = "segmentation"
MASKS = "masks"
FEATURES = "features"
CLASSIFICATION = "classification"
REPORT = "report.html"
EXTERNAL_REPORT = "external_report.html"
REPORT_FILES = "report_files"
CACHE = "cache"
COHORT = "cohort"
# files inside the stage folders that other stages or the report read
SUMMARY = "summary.json"
METRICS = "metrics.json"
METRICS_PREDICTED = "metrics_predicted.json"
PER_PATIENT = "per_patient.csv"
COMPARISON = "comparison.csv"
TRAIN_LOG = "train_log.csv"
CURVES = "curves.png"
OVERLAYS = "overlays"
MODEL_PT = "model.pt"
LAST_PT = "last.pt"
FOLD_DIR = "fold_{}"
FOLD_CURVES = "fold_curves.png"
FEATURES_TABLE = "features.parquet"
FEATURES_CSV = "features.csv"
DIAGNOSTICS = "diagnostics.csv"
ERRORS = "errors.csv"
COLUMN_COUNTS = "column_counts.json"
COLUMNS = "columns.json"
MODEL_JOBLIB = "model.joblib"
MODEL_CARD = "model_card.json"
MODELS = "models"
PREDICTIONS = "predictions.csv"
PREDICTIONS_PREDICTED = "predictions_predicted.csv"
CONFUSION = "confusion_matrices.json"
FIGURES = "figures"
# issue 13's paper results in classification/: Table 1 (baseline characteristics per split and class),
# the binary sub-tasks (targets/<target>/ each a full set of the files above, targets.json side by side),
# the source ablation and importance share (ablation.json)
TABLE1 = "table1.csv"
TARGETS = "targets"
TARGETS_SUMMARY = "targets.json"
ABLATION = "ablation.json"
FEATURE_FILES = (FEATURES_TABLE, FEATURES_CSV, DIAGNOSTICS, ERRORS, COLUMN_COUNTS, COLUMNS)
# feature robustness (features.robustness, classification.min_icc): features/robustness.csv (perturbation ICC
# on the training patients), classification/agreement.csv (manual- vs predicted-mask ICC on the test patients),
# classification/robust_filter.json (the filter's threshold, kept features, test metrics with and without it)
ROBUSTNESS = "robustness.csv"
AGREEMENT = "agreement.csv"
ROBUST_FILTER = "robust_filter.json"


SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def case_file(folder: str | Path, case: str, suffix: str) -> Path:
    """``<folder>/<case><suffix>``: the one way a case id becomes a file name. An id that is not a
    plain name (letters, digits, ``_ - .``, no leading dot) or would leave ``folder`` is refused."""
    from .errors import InputError

    folder = Path(folder)
    path = folder / f"{case}{suffix}"
    if not SAFE_ID.fullmatch(str(case)) or path.resolve().parent != folder.resolve():
        raise InputError(f"Case id {str(case)!r} cannot name a file (allowed: letters, digits, '_', '-', '.', no "
                         "leading '.'); rename the case in the manifest or input folder.")
    return path


class Layout:
    """Named paths of a run's artifacts below ``root``: the run folder itself, a stage's staging
    folder (which mirrors it), or ``Path()`` for run-relative paths."""

    def __init__(self, root: str | Path = ""):
        self.root = Path(root)

    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def config_yaml(self) -> Path:
        return self.root / CONFIG_YAML

    @property
    def fingerprint(self) -> Path:
        return self.root / FINGERPRINT

    @property
    def plan(self) -> Path:
        return self.root / PLAN

    @property
    def splits(self) -> Path:
        return self.root / SPLITS

    @property
    def preprocess_dir(self) -> Path:
        return self.root / PREPROCESS

    @property
    def preprocess_summary(self) -> Path:
        return self.root / PREPROCESS / SUMMARY

    @property
    def slices_dir(self) -> Path:
        return self.root / PREPROCESS / "slices"

    @property
    def slices_index(self) -> Path:
        return self.root / PREPROCESS / "slices.csv"

    def slice_file(self, pid: str, kind: str) -> Path:
        """``preprocess/slices/<pid>_<kind>.npy`` (kind: image | mask)."""
        return case_file(self.slices_dir, pid, f"_{kind}.npy")

    def meta_file(self, pid: str) -> Path:
        return case_file(self.root / PREPROCESS / "meta", pid, ".json")

    def segmentation_dir(self, arch: str = "crfe") -> Path:
        """'segmentation' for CRFE, 'segmentation/<arch>' for a baseline."""
        return self.root / SEGMENTATION if arch == "crfe" else self.root / SEGMENTATION / arch

    def masks_dir(self, arch: str = "crfe") -> Path:
        """Predicted test masks: 'masks' (read by the feature stage) for CRFE, else under the model's folder."""
        return self.root / MASKS if arch == "crfe" else self.segmentation_dir(arch) / MASKS

    def seg_model(self, arch: str = "crfe") -> Path:
        return self.segmentation_dir(arch) / MODEL_PT

    def seg_metrics(self, arch: str = "crfe") -> Path:
        return self.segmentation_dir(arch) / METRICS

    def fold_dir(self, fold: int, arch: str = "crfe") -> Path:
        """One fold of a k-fold ensemble: 'segmentation[/<arch>]/fold_<k>' (checkpoints, log, curves, and
        for fold 0 its own test scores and masks)."""
        return self.segmentation_dir(arch) / FOLD_DIR.format(fold)

    def features_dir(self, masks: str = "manual") -> Path:
        return self.root / FEATURES if masks == "manual" else self.root / FEATURES / "predicted"

    def features_table(self, masks: str = "manual") -> Path:
        return self.features_dir(masks) / FEATURES_TABLE

    def features_files(self, masks: str = "manual") -> list[Path]:
        return [self.features_dir(masks) / f for f in FEATURE_FILES]

    @property
    def robustness(self) -> Path:
        """Perturbation ICC per feature on the training patients (features.robustness on)."""
        return self.features_dir("manual") / ROBUSTNESS

    @property
    def classification_dir(self) -> Path:
        return self.root / CLASSIFICATION

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def external_report(self) -> Path:
        return self.root / EXTERNAL_REPORT

    @property
    def report_files(self) -> Path:
        return self.root / REPORT_FILES

    def cache_dir(self, kind: str) -> Path:
        return self.root / CACHE / kind

    @property
    def hash_cache(self) -> Path:
        """Content hashes of files read, by (path, size, mtime): :class:`HashCache`."""
        return self.cache_dir("hashes") / "files.json"

    @property
    def cohort_dir(self) -> Path:
        return self.root / COHORT


RELATIVE = Layout()


class StageContext(Layout):
    """Where a running stage writes: the named paths of :class:`Layout` below its staging folder."""

    def __init__(self, run: "RunDir", name: str, staging: Path, key: str | None = None):
        super().__init__(staging)
        self.run = run
        self.name = name
        self.key = key
        self.staging = staging
        self.info: dict[str, Any] = {}

    def path(self, rel: str | Path) -> Path:
        p = self.staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class RunLockedError(CerviradError):
    """Another process works on the same run folder."""


class RunDir(Layout):
    """A run folder: provenance and the record of what ran in ``run.json``, staged atomic stage outputs."""

    def __init__(self, path: str | Path, cfg: Config | None = None):
        super().__init__(Path(path).resolve())
        self.path = self.root
        self.cfg = cfg
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # read-only place, a file in the way, ...
            raise _unwritable(self.path, e) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise _unwritable(self.path, PermissionError(13, "Permission denied"))
        if cfg is not None:
            self.write_provenance(cfg)

    # -- provenance ---------------------------------------------------------
    def read_run_json(self) -> dict:
        if self.run_json.is_file():
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        return {}

    def write_provenance(self, cfg: Config) -> None:
        self.cfg = cfg
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
        try:
            write_json(self.run_json, info)
            write_text(self.config_yaml, cfg.to_yaml())
        except OSError as e:  # read-only or full run folder
            raise _unwritable(self.path, e) from None

    def claim(self, identity: dict, force: bool = False) -> None:
        """Mark the folder as holding the run ``identity`` (its kind and data source).

        A folder that already holds another run's artifacts is refused unless ``force``, which
        removes every recorded output and record first.
        """
        info = self.read_run_json()
        held = info.get("identity")
        if held is None and info.get("stages") and not force:
            held = {"kind": "unknown"}
        if held is not None and held != identity:
            if not force:
                raise CerviradError(
                    f"Run folder '{self.path}' holds the artifacts of another run ({_describe(held)}), not of "
                    f"{_describe(identity)}; pass --force to replace them, or choose another --run-dir.")
            self.clear()
            info = self.read_run_json()
        info["identity"] = identity
        write_json(self.run_json, info)

    def clear(self) -> None:
        """Remove every stage's recorded outputs and the stage records (keeps caches and the demo cohort)."""
        info = self.read_run_json()
        for rec in info.get("stages", {}).values():
            for rel in rec.get("outputs") or {}:
                remove(self.path / rel)
        shutil.rmtree(self.path / PARTIAL, ignore_errors=True)
        info["stages"] = {}
        write_json(self.run_json, info)

    def update_stage(self, name: str, **fields: Any) -> None:
        info = self.read_run_json()
        info.setdefault("stages", {}).setdefault(name, {}).update(fields)
        write_json(self.run_json, info)

    def stage_record(self, name: str) -> dict:
        return self.read_run_json().get("stages", {}).get(name, {})

    # -- files --------------------------------------------------------------
    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def require(self, path: Path, hint: str) -> Path:
        from .errors import InputError

        p = self.path / path
        if not p.exists():
            raise InputError(f"Run directory '{self.path}' has no '{p.relative_to(self.path)}'; {hint}.")
        return p

    @contextlib.contextmanager
    def session(self, cfg: Config, identity: dict, force: bool = False) -> Iterator["RunDir"]:
        """Work on the run: hold its lock, claim it for ``identity`` and record provenance."""
        with self.lock():
            self.claim(identity, force=force)
            self.write_provenance(cfg)
            yield self

    # -- one process at a time ---------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder's lock for the block: ``.lock`` holds the holder's pid under an
        ``fcntl`` lock, which the kernel drops when the holder dies, so the lock file a killed run
        leaves behind is simply taken over. A second process fails at once, naming the holder."""
        import fcntl

        path = self.path / LOCK_FILE
        while True:
            fh = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise RunLockedError(f"Run folder '{self.path}' is in use by another cervirad process (pid {holder}); "
                                     "wait for it to finish or pass another --run-dir.") from None
            try:  # the holder we waited behind may have removed the file: lock the file that is there now
                same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            path.unlink(missing_ok=True)
            fh.close()

    # -- stages -------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, key: str | None = None, resumable: bool = False,
              replace: tuple[str | Path, ...] = ()) -> Iterator[StageContext]:
        """Run a stage: stage into ``.partial/<name>``, promote on success, log to run.json.

        Promotion merges folders entry by entry; run-relative files and folders named in ``replace``
        are owned by this stage: the old ones are removed first, so nothing of an earlier run stays.
        """
        staging = self.path / PARTIAL / name
        if staging.exists() and not resumable:
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(self, name, staging, key)
        t0 = time.perf_counter()
        self.update_stage(name, status="running", started=_now(), finished=None, key=key, error=None, outputs=None,
                          replaced_by=None)
        try:
            yield ctx
        except BaseException as e:
            msg = str(e) if isinstance(e, CerviradError) else f"{type(e).__name__}: {e}"
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            self.update_stage(name, status=status, error=msg, seconds=round(time.perf_counter() - t0, 3),
                              problems=getattr(e, "problems", None))
            if not resumable or isinstance(e, CerviradError):
                shutil.rmtree(staging, ignore_errors=True)
                self._drop_empty_partial()
            raise
        for rel in replace:  # the stage owns these: nothing of an earlier run survives beside the new ones
            remove(self.path / rel)
        self._promote(staging)
        self.update_stage(name, status="done", finished=_now(), seconds=round(time.perf_counter() - t0, 3),
                          **ctx.info)

    def _promote(self, staging: Path) -> None:
        for entry in sorted(staging.iterdir()):
            self._move_into(entry, self.path / entry.name)
        shutil.rmtree(staging, ignore_errors=True)
        self._drop_empty_partial()

    def _drop_empty_partial(self) -> None:
        parent = self.path / PARTIAL
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()

    def _move_into(self, src: Path, dst: Path) -> None:
        """Move ``src`` onto ``dst``; folders merge entry by entry, files replace atomically."""
        if src.is_dir() and dst.is_dir():
            for child in sorted(src.iterdir()):
                self._move_into(child, dst / child.name)
            return
        if dst.is_dir() != src.is_dir():
            remove(dst)
        os.replace(src, dst)


def remove(path: Path) -> None:
    """Remove a file or a folder tree; nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _unwritable(path: Path, e: OSError) -> CerviradError:
    """The one-line error for a run folder cervirad cannot write."""
    from .errors import InputError

    why = e.strerror or type(e).__name__
    return InputError(f"Run folder '{path}' cannot be written ({why}); make it writable or pass another --run-dir "
                      "(or run.runs_root).")


def _describe(identity: dict) -> str:
    kind = identity.get("kind", "unknown")
    source = identity.get("source")
    return f"{kind} '{source}'" if source else f"a {kind} run"


# --------------------------------------------------------------------------- content hashes
class HashCache:
    """sha256 of files, cached by (path, size, mtime_ns) in ``<run>/cache/hashes.json``.

    A file whose size and modification time are unchanged is not read again, so a rerun of a
    finished run hashes nothing; touching a file makes it be read (and its bytes decide).
    A folder's hash combines the relative names and hashes of every file below it.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}
        self.dirty = False

    def file(self, f: Path) -> str:
        st = f.stat()
        key = str(f.resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = file_hash(f)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def of(self, p: Path) -> str | None:
        """Hash of a file or folder (``folder#UID``: the folder); None when it does not exist."""
        p = series_folder(Path(p))
        if p.is_file():
            return self.file(p)
        if not p.is_dir():
            return None
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p)}\0{self.file(f)}\n".encode())
        return h.hexdigest()[:16]

    def save(self) -> None:
        if self.path is not None and self.dirty:
            write_json(self.path, self.entries)
            self.dirty = False


def open_run(cfg: Config, run_dir: str | Path | None) -> RunDir:
    """The run folder for ``cfg``: ``--run-dir`` if given, else ``<runs_root>/<run.name>``.

    Nothing is written yet: the orchestrator writes provenance once it holds the lock."""
    path = Path(run_dir) if run_dir else Path(cfg.run.runs_root) / cfg.run.name
    return RunDir(path)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **{"dpi": 110, "bbox_inches": "tight", **kwargs})
    plt.close(fig)
    return path
