"""What every command shares: the typer ``app``, the common options, logging, and loading a config and its run
(each command then calls :func:`cervirad.pipeline.run_stages` itself).

Nothing heavy is imported here (see :mod:`cervirad.cli`).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="cervirad",
    help="Cervical-cancer MRI -> CRFE lesion segmentation -> radiomics -> leakage-safe pathological-type classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see configs/).")
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default: <run.runs_root>/<run.name>).")
SetOpt = typer.Option([], "--set", help="Override a config value, e.g. --set segmentation.epochs=2 (repeatable).")
ForceOpt = typer.Option(False, "--force", help="Redo this stage even if it is up to date; replace another run's "
                        "artifacts in --run-dir.")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("radiomics", "distributed", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load(config: Optional[Path], overrides: List[str]):
    from ..config.loading import load_config

    return load_config(config, overrides)


def load_run(config: Optional[Path], overrides: List[str], run_dir: Optional[Path]):
    """The validated config and its run directory (nothing written yet). Without --config, an
    existing --run-dir's own resolved config.yaml is the starting point."""
    from ..layout import Layout
    from ..rundir import open_run

    if config is None and run_dir is not None and Layout(run_dir).config_yaml.is_file():
        config = Layout(run_dir).config_yaml
    cfg = load(config, overrides)
    return cfg, open_run(cfg, run_dir)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


def check_writable(path: Path, flag: str) -> None:
    """``path`` can be created: its nearest existing ancestor is a folder we may write into."""
    from ..errors import InputError

    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{flag} '{path}': '{parent}' is a file, not a folder; choose another path.")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} '{path}': folder '{parent}' is not writable; choose another path or fix its "
                         "permissions.")
