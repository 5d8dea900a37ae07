"""The run folder: the lock, the claim, and the stage transaction (names and paths: :mod:`cervirad.layout`).

:class:`RunDir` is one run's folder. Its ``run.json`` holds the provenance
(:mod:`cervirad.provenance`) and THE record of what ran: per stage its key, status, wall time,
error and the hashes of the files it wrote. One process at a time works on a run folder
(:meth:`RunDir.lock`); a folder holding another run's artifacts, or files cervirad did not
write, is refused unless ``--force`` (:meth:`RunDir.claim`, :func:`claim_output_folder`).

A stage writes into a hidden staging folder ``.partial/<stage>/`` that mirrors the run layout
(:class:`StageContext`); only when the stage succeeds are its entries moved into place (one
``os.replace`` each). A failed stage therefore leaves nothing behind except its error in
``run.json``. Resumable stages (segmentation training) keep their staging folder across a crash
so a rerun can pick up the last checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import shutil
import time
from json import JSONDecodeError
from pathlib import Path
from typing import Any, Iterator

from .errors import CerviradError, InputError
from .files import CURRENT_OUTPUT, read_json, write_json, write_text
from .layout import LOCK_FILE, PARTIAL, RUN_ENTRIES, RUN_JSON, Layout
from .provenance import provenance

Config = Any  # a cervirad.config.Config: the run folder reads only its hash, YAML text, seeds and run section


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def refuse_inside_run(target: str | Path, flag: str) -> None:
    """``target`` (an output the user named) must not lie inside a run folder's own entries (its stage folders,
    records, caches): those are cervirad's and the next run replaces them. Outside them - or as the run folder
    itself - it may."""
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





class StageContext(Layout):
    """Where a running stage writes: the named paths of :class:`Layout` below its staging folder (not the run
    folder: a stage reads what its row declares, :class:`cervirad.stages.StageInputs`)."""

    def __init__(self, name: str, staging: Path, key: str | None = None):
        super().__init__(staging)
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
        info.update(provenance(cfg.hash(), {"run": cfg.run.seed, "demo_data": cfg.data.demo_seed}))
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
        ctx = StageContext(name, staging, key)
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
    f = Path(root) / RUN_JSON
    if not f.is_file():
        return {}
    try:
        info = read_json(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"line {e.lineno}: {e.msg}" if isinstance(e, JSONDecodeError) else type(e).__name__
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


def open_run(cfg: Config, run_dir: str | Path | None) -> RunDir:
    """The run folder for ``cfg``: ``--run-dir`` if given, else ``<runs_root>/<run.name>``.

    Nothing is written yet: the orchestrator writes provenance once it holds the lock."""
    path = Path(run_dir) if run_dir else Path(cfg.run.runs_root) / cfg.run.name
    return RunDir(path)

