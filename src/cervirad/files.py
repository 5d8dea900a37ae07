"""Files on disk: atomic writes, the one JSON reader and writer, storage errors, and content hashes.

Every file cervirad writes goes through :func:`atomic_path` (a temporary file renamed onto the
target only on success), so a crash or a full disk never leaves a half-written artifact; a full
or read-only disk is one line (:func:`storage_error`). Hashes: :func:`file_hash` of a file or a
folder's files, :func:`hash_obj` of a JSON-able value (config sections, cache keys), and
:class:`HashCache`, which skips re-reading files whose size and modification time are unchanged.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError
from .jsonutil import jsonable

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


def read_json(path: str | Path) -> Any:
    """The value of the UTF-8 JSON file ``path``. Errors are the caller's to word: OSError when it cannot be
    read, UnicodeDecodeError or ValueError (:class:`json.JSONDecodeError`) when it is not JSON."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- content hashes
def hash_obj(obj: Any) -> str:
    """sha256 (16 hex digits) of a JSON-able value, keys sorted: equal values, equal hashes."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
                self.entries = read_json(path)
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
