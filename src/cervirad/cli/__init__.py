"""The ``cervirad`` command line: parse, load the config, call the stage, report.

One module per command group registers its commands on the shared typer ``app``
(:mod:`.common`): :mod:`.data` (demo-data, validate, index-dicom), :mod:`.segmentation`
(preprocess, plan, train-seg, segment), :mod:`.classification` (extract-features, classify,
predict) and :mod:`.runs` (evaluate, run-all, report); this module is the console entry point.
Heavy libraries (torch, radiomics, sklearn, xgboost) are imported inside the command
bodies so that ``cervirad --help`` is instant. A :class:`CerviradError` becomes one line on
stderr and exit code 2; anything else is an internal error, exit code 1.
"""
from __future__ import annotations

import logging
import os
import sys

import typer

from ..errors import CerviradError
from . import data, segmentation, classification, runs  # noqa: F401  (each registers its commands on app, in
#                                                  this order: the order of `cervirad --help`)
from .common import app, setup_logging

log = logging.getLogger("cervirad")


def main() -> None:
    """Console entry point: one line and exit 2 for user errors, exit 1 for internal errors. Under
    torchrun (``WORLD_SIZE`` > 1) rank 0 runs the command and the other ranks train alongside it
    (:mod:`cervirad.segmentation.distributed`)."""
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        from ..segmentation.distributed import run_ranks

        setup_logging()
        try:
            sys.exit(run_ranks(_main_one))
        except CerviradError as e:  # torchrun's environment incomplete or not understood
            typer.echo(f"cervirad: error: {e}", err=True)
            sys.exit(e.exit_code)
    _main_one()


def _main_one() -> None:
    """Run the command: one line for every error the user can fix (exit 2, usage errors included), "cervirad:
    interrupted" on Ctrl-C (exit 130) and on SIGTERM (exit 143; the running stage is marked interrupted either
    way), a full disk or read-only file system reported as such (exit 2), anything else exit 1."""
    signal_name, restore = _terminate_like_ctrl_c()
    try:
        rc = app(standalone_mode=False)
        if rc == 130:  # typer turns KeyboardInterrupt into exit code 130 (no message)
            raise KeyboardInterrupt
        sys.exit(rc or 0)
    except CerviradError as e:
        msg = str(e).replace("\n", " ")
        typer.echo(f"cervirad: error: {msg}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted(signal_name())
    except Exception as e:
        if type(e).__name__ == "Abort":  # the click typer carries: Ctrl-D / Ctrl-C at a prompt
            _interrupted(signal_name())
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):  # click usage errors
            _usage_error(e)
        from ..files import storage_error  # a full disk or read-only file system is the user's to fix

        err = storage_error(e)
        if err is None:
            _internal(e)
        typer.echo(f"cervirad: error: {err}", err=True)
        sys.exit(2)
    finally:
        restore()


def _interrupted(name: str | None) -> None:
    typer.echo(f"cervirad: interrupted{f' ({name})' if name else ''}", err=True)
    sys.exit(143 if name == "SIGTERM" else 130)


def _usage_error(e) -> None:
    """A command-line usage error (unknown option, bad type, missing value) in one line; a bare ``cervirad`` or
    ``cervirad CMD`` shows the help as before."""
    if type(e).__name__ == "NoArgsIsHelpError":
        e.show()
        sys.exit(e.exit_code)
    ctx = getattr(e, "ctx", None)
    where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    typer.echo(f"cervirad: error: {e.format_message().replace(chr(10), ' ').rstrip('. ')}{where}", err=True)
    sys.exit(e.exit_code)


def _internal(e: Exception) -> None:
    log.debug("internal error", exc_info=True)
    typer.echo(f"cervirad: internal error: {type(e).__name__}: {e} (rerun with -v for the traceback; "
               "please report it)", err=True)
    sys.exit(1)


def _terminate_like_ctrl_c():
    """SIGTERM raises KeyboardInterrupt (the running stage is marked interrupted, workers are shut down) and is
    remembered; returns (the name of the signal received, None for Ctrl-C; a function restoring the handler)."""
    import signal
    import threading

    got: list[str] = []

    def on_term(signum, frame):
        got.append("SIGTERM")
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    return (lambda: got[0] if got else None), restore
