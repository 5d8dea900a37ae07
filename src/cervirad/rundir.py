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
import errno
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
from .config import SAFE_ID, Config
from .errors import CerviradError, shorten
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
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success (a symlink at ``path``
    is replaced, never followed). A full disk or read-only file system is a one-line InputError naming ``path``."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes) or ".tmp"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        yield tmp_path
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as e:  # RuntimeError: SimpleITK's writers
        err = storage_error(e, path)
        if err is None:
            raise
        raise err from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


_NUMPY_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
CURRENT_OUTPUT: list[Path] = []  # the output folder of this command (the run folder): where a write failed


def storage_error(e: BaseException, path: str | Path | None = None):
    """The one-line :class:`InputError` for a write that failed because the disk is full (or the quota spent)
    or the file system is read-only - with the path and the space free/needed -, else None."""
    import errno

    from .errors import InputError

    text = str(e)
    code = getattr(e, "errno", None)
    short = _NUMPY_SHORT_WRITE.search(text)
    full = code in (errno.ENOSPC, errno.EDQUOT) or short is not None or any(t in text for t in _FULL_TEXT)
    readonly = code == errno.EROFS or "Read-only file system" in text
    if not (full or readonly):
        return None
    where = Path(path or getattr(e, "filename", None) or (CURRENT_OUTPUT[-1] if CURRENT_OUTPUT else "."))
    if readonly:
        return InputError(f"Cannot write '{where}': the file system is read-only; pass an output folder (--run-dir, "
                          "--out) on a writable disk.")
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 1e6:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    need = f", {int(short.group(1)) / 1e6:.1f} MB needed for one write" if short else ""
    return InputError(f"Cannot write '{where}': no space left on the device ({free}{need}); free some space "
                      "or pass an output folder (--run-dir, --out) on another disk, then rerun (finished stages "
                      "are kept).")


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
PRETRAIN_PT = "pretrain.pt"  # a network's self-supervised warm-start weights (segmentation/pretrain.py)
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


# every top-level entry of a run folder that cervirad owns: a user's file inside one of them would be replaced or
# deleted by the next run, so no command writes a user-chosen output there (:func:`refuse_inside_run`)
RUN_ENTRIES = (RUN_JSON, CONFIG_YAML, LOCK_FILE, PARTIAL, FINGERPRINT, PLAN, SPLITS, PREPROCESS, SEGMENTATION, MASKS,
               FEATURES, CLASSIFICATION, REPORT, EXTERNAL_REPORT, REPORT_FILES, CACHE, COHORT)


def refuse_inside_run(target: str | Path, flag: str) -> None:
    """``target`` (an output the user named) must not lie inside a run folder's own entries (its stage folders,
    records, caches): those are cervirad's and the next run replaces them. Outside them - or as the run folder
    itself - it may."""
    from .errors import InputError

    t = Path(os.path.abspath(target))
    for anc in t.parents:
        if (anc / RUN_JSON).is_file():
            rel = t.relative_to(anc)
            if rel.parts and rel.parts[0] in RUN_ENTRIES:
                raise InputError(f"{flag} '{target}' lies inside run folder '{anc}' ('{rel.parts[0]}' belongs to "
                                 "cervirad and is replaced by the next run); choose a path outside it.")
            return


def refuse_inputs_inside(out: str | Path, flag: str, inputs) -> None:
    """No input of the command lies in (or is) the output folder ``out`` - not even with --force."""
    from .errors import InputError

    o = Path(out).resolve()
    for inp in inputs:
        if inp is None:
            continue
        i = Path(inp).resolve()
        if i == o or o in i.parents:
            raise InputError(f"{flag} '{out}' holds '{inp}', an input of this command; inputs are never written over "
                             "(not even with --force): choose another output folder.")


def claim_output_folder(out: str | Path, flag: str, *, force: bool, inputs=(), owned=None) -> None:
    """The one rule for an output folder (a run folder, ``segment --out``, ``evaluate --out``): cervirad writes
    into a folder that is new or empty, or that it marked as its own (``owned(folder)``); a folder holding
    files it did not write is refused unless ``force``; a folder holding an input of the same command is
    refused even with ``force``; never inside another run's own entries."""
    from .errors import InputError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} '{out}' is a file; give a folder (it is created if missing).")
    refuse_inside_run(out, flag)
    refuse_inputs_inside(out, flag, inputs)
    if force or not out.is_dir() or (owned is not None and owned(out)):
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if foreign:
        raise InputError(f"{flag} '{out}' holds files cervirad did not write ({', '.join(map(repr, foreign[:3]))}"
                         f"{' ...' if len(foreign) > 3 else ''}); choose a new or empty folder, or pass --force to "
                         "write beside them.")


def is_run_folder(path: Path) -> bool:
    return (Path(path) / RUN_JSON).is_file()


def case_file(folder: str | Path, case: str, suffix: str) -> Path:
    """``<folder>/<case><suffix>``: the one way a case id becomes a file name. An id that is not a
    plain name (letters, digits, ``_ - .``, no leading dot) or would leave ``folder`` is refused."""
    from .errors import InputError

    folder = Path(folder)
    path = folder / f"{case}{suffix}"
    if not SAFE_ID.fullmatch(str(case)) or path.resolve().parent != folder.resolve():
        raise InputError(f"Case id {shorten(str(case))!r} cannot name a file (allowed: letters, digits, '_', '-', '.', no "
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
        self.flag = "--run-dir"
        refuse_inside_run(path, "Run folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # read-only place, a file in the way, ...
            raise _unwritable(self.path, e) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            ro = _read_only(self.path)
            raise _unwritable(self.path, OSError(30, "Read-only file system") if ro else
                              PermissionError(13, "Permission denied"))
        CURRENT_OUTPUT.append(self.path)
        if cfg is not None:
            self.write_provenance(cfg)

    # -- provenance ---------------------------------------------------------
    def read_run_json(self) -> dict:
        return read_run_json(self.path)

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
        doomed = [self.inside(rel) for rec in info.get("stages", {}).values() for rel in rec.get("outputs") or {}]
        for p in doomed:  # every path checked first: one outside the run folder stops the clearing before any delete
            remove(p)
        remove(self.partial_dir())
        info["stages"] = {}
        write_json(self.run_json, info)

    def update_stage(self, name: str, **fields: Any) -> None:
        info = self.read_run_json()
        info.setdefault("stages", {}).setdefault(name, {}).update(fields)
        write_json(self.run_json, info)

    def stage_record(self, name: str) -> dict:
        return self.read_run_json().get("stages", {}).get(name, {})

    # -- files --------------------------------------------------------------
    def inside(self, rel: str | Path) -> Path:
        """``<run>/<rel>`` when it resolves inside the run folder (its last part may be a link: it is then the
        link that is removed or replaced, never its target); else a one-line InputError - a path from a
        tampered or copied run.json is never deleted outside the run."""
        from .errors import InputError

        p = self.path / rel
        parent = p.parent.resolve()
        if p.name in ("", ".", "..") or not (parent == self.path or self.path in parent.parents):
            raise InputError(f"Run record '{self.run_json}' names output '{rel}', which resolves outside the run folder "
                             f"('{parent / p.name}'); nothing was deleted. Remove that entry from run.json or use a "
                             "fresh --run-dir.")
        return parent / p.name

    def partial_dir(self, name: str | None = None) -> Path:
        """``<run>/.partial[/<name>]``, refused (one line) when it or the staging folder is a symbolic link: a
        link there would make cervirad write into, or delete, the folder it points to."""
        from .errors import InputError

        parts = [PARTIAL] + ([name] if name else [])
        p = self.path
        for part in parts:
            p = p / part
            if p.is_symlink():
                raise InputError(f"'{p}' is a symbolic link (to '{os.readlink(p)}'); cervirad stages its work there "
                                 "and never follows links: remove the link (the folder it points to is untouched) "
                                 "and rerun.")
        return p

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def require(self, path: Path, hint: str) -> Path:
        from .errors import InputError

        p = self.path / path
        if not p.exists():
            raise InputError(f"Run directory '{self.path}' has no '{p.relative_to(self.path)}'; {hint}.")
        return p

    @contextlib.contextmanager
    def session(self, cfg: Config, identity: dict, force: bool = False, inputs=(),
                flag: str = "--run-dir") -> Iterator["RunDir"]:
        """Work on the run: check the folder may be written (:func:`claim_output_folder`; ``inputs``: the
        command's input files), hold its lock, claim it for ``identity`` and record provenance."""
        self.flag = flag
        claim_output_folder(self.path, flag, force=force, inputs=inputs, owned=is_run_folder)
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

        from .errors import InputError

        path = self.path / LOCK_FILE
        while True:
            try:  # never through a link: the file written is the lock itself
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except OSError as e:
                if path.is_symlink() or e.errno == errno.ELOOP:
                    raise InputError(f"Lock file '{path}' is a symbolic link (to '{os.readlink(path)}'); cervirad never "
                                     "writes through links: remove the link (its target is untouched) and rerun.") \
                        from None
                raise
            fh = open(fd, "a+", encoding="utf-8")
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
        staging = self.partial_dir(name)
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
        for p in [self.inside(rel) for rel in replace]:  # the stage owns these: nothing of an earlier run survives
            remove(p)
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
        if parent.is_dir() and not parent.is_symlink() and not any(parent.iterdir()):
            parent.rmdir()

    def _move_into(self, src: Path, dst: Path) -> None:
        """Move ``src`` onto ``dst``; folders merge entry by entry, files replace atomically."""
        if dst.is_symlink():  # a link in the run folder is replaced, never merged into or written through
            dst.unlink()
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


def read_run_json(root: str | Path) -> dict:
    """``<root>/run.json`` ({} when absent); a damaged one (not JSON, not a record of stages) is a one-line
    InputError saying how to recover."""
    from .errors import InputError

    f = Path(root) / RUN_JSON
    if not f.is_file():
        return {}
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise InputError(f"Run record '{f}' is damaged ({why}); restore it, or pass --run-dir/--out a fresh folder "
                         "(or delete this run folder) to start over.") from None
    stages = info.get("stages", {}) if isinstance(info, dict) else None
    bad = not isinstance(stages, dict) or any(
        not isinstance(r, dict) or not isinstance(r.get("outputs") or {}, dict) for r in stages.values())
    if bad:
        raise InputError(f"Run record '{f}' is damaged (not a mapping with a 'stages' record per stage); restore it, "
                         "or pass --run-dir/--out a fresh folder (or delete this run folder) to start over.")
    return info


def _unwritable(path: Path, e: OSError) -> CerviradError:
    """The one-line error for a run folder cervirad cannot write."""
    from .errors import InputError

    why = e.strerror or type(e).__name__
    return InputError(f"Run folder '{path}' cannot be written ({why}); make it writable or pass another --run-dir "
                      "(or run.runs_root).")


def _read_only(path: Path) -> bool:
    """Is ``path`` on a file system mounted read-only?"""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


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
