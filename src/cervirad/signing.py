"""Per-installation signatures for the pickles cervirad writes (HMAC-SHA256).

Unpickling a file runs code, so ``cervirad predict`` loads a ``*.joblib`` only when this
installation wrote it: ``cervirad classify`` signs every pickle it writes with a secret key
that lives outside every run folder, and ``predict`` recomputes the HMAC before loading.
A hash stored next to a file proves nothing (whoever plants the file recomputes it); an
HMAC cannot be forged without the key.

The key: ``$CERVIRAD_KEY_FILE`` if set, else ``${XDG_CONFIG_HOME:-~/.config}/cervirad/signing.key``;
32 random bytes created on first use (file mode 0600; a folder created for it gets 0700).
Deleting the key makes every model signed with it untrusted (``--trust-model`` still loads one).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from .errors import InputError

log = logging.getLogger(__name__)

KEY_ENV = "CERVIRAD_KEY_FILE"
KEY_BYTES = 32
ALGORITHM = "hmac-sha256"


def key_path() -> Path:
    """Where this installation's signing key lives (see the module docstring)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "cervirad" / "signing.key"


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as e:
        raise InputError(f"Signing key '{path}' cannot be read ({e.strerror or e}); fix its permissions "
                         f"or point {KEY_ENV} at another file.") from None
    if len(key) != KEY_BYTES:
        raise InputError(f"Signing key '{path}' holds {len(key)} bytes, not {KEY_BYTES}; it is damaged - delete it "
                         "to create a new one (models signed with the old key then need --trust-model).")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("signing key '%s' is readable by other users; run `chmod 600 %s`", path, path)
    return key


def _create_key(path: Path) -> None:
    """Write a new random key atomically (link a finished 0600 temp file; a concurrent creator wins cleanly)."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        for d in reversed(missing):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise InputError(f"Cannot create the signing key '{path}' ({e.strerror or e}); make its folder writable "
                         f"or point {KEY_ENV} at a writable file.") from None
    log.info("created this installation's model-signing key %s", path)


def load_key(create: bool = False) -> bytes | None:
    """This installation's key; created when missing and ``create``, else None when missing."""
    path = key_path()
    if not path.exists():
        if not create:
            return None
        _create_key(path)
    return _read_key(path)


def key_id(key: bytes) -> str:
    """A public fingerprint of a key (tells which installation signed a model; reveals nothing of the key)."""
    return hashlib.sha256(b"cervirad-key-id\0" + key).hexdigest()[:16]


def sign_bytes(data: bytes, key: bytes | None = None) -> str:
    """Hex HMAC-SHA256 of ``data`` with this installation's key (created on first use)."""
    key = key if key is not None else load_key(create=True)
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign_file(path: str | Path, key: bytes | None = None) -> str:
    return sign_bytes(Path(path).read_bytes(), key)


def verify_bytes(data: bytes, signature: str | None, key: bytes | None = None) -> bool:
    """True when ``signature`` is this installation's HMAC of ``data`` (False when no key or no signature)."""
    key = key if key is not None else load_key(create=False)
    if key is None or not isinstance(signature, str):
        return False
    return hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), signature.lower())
