"""The ``cervirad`` command line: parse, load the config, call the stage, report.

Heavy libraries (torch, radiomics, sklearn, xgboost) are imported inside the command
bodies so that ``cervirad --help`` is instant. A :class:`CerviradError` becomes one line on
stderr and exit code 2; anything else is an internal error, exit code 1.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import CerviradError

app = typer.Typer(
    name="cervirad",
    help="Cervical-cancer MRI -> CRFE lesion segmentation -> radiomics -> leakage-safe pathological-type classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("cervirad")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see configs/).")
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default: <run.runs_root>/<run.name>).")
SetOpt = typer.Option([], "--set", help="Override a config value, e.g. --set segmentation.epochs=2 (repeatable).")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("radiomics", "distributed", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load(config: Optional[Path], overrides: List[str]):
    from .config import load_config

    return load_config(config, overrides)


def open_run_dir(cfg, run_dir: Optional[Path]):
    from .rundir import open_run

    return open_run(cfg, run_dir)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _setup_logging(verbose)


# --------------------------------------------------------------------------- foundation
@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    patients: int = typer.Option(100, "--patients", help="Number of patients."),
    seed: int = typer.Option(7, "--seed", help="Random seed (same seed, same bytes)."),
) -> None:
    """Write the synthetic demo cohort (manifest, clinical CSV, NIfTI volumes and masks)."""
    from .demo import write_demo_cohort

    manifest, clinical = write_demo_cohort(out, patients, seed)
    typer.echo(f"demo cohort: {patients} patients -> {manifest} and {clinical}")


def _manifest_overrides(manifest: Path, clinical: Optional[Path]) -> List[str]:
    """Config overrides for a bare ``--manifest``: sequences are the manifest's image columns."""
    import csv

    from .config import DataConfig

    out = ["data.source=manifest", f"data.manifest={manifest}"] + ([f"data.clinical={clinical}"] if clinical else [])
    if not manifest.is_file():
        return out
    with open(manifest, newline="") as fh:
        header = [c.strip() for c in next(csv.reader(fh), [])]
    d = DataConfig()
    seqs = [c for c in header if c not in (d.id_column, d.mask_column)]
    if seqs:
        out += [f"data.sequences={seqs}", f"segmentation.input_sequences=[{seqs[0]}]", f"features.sequences=[{seqs[0]}]"]
    return out


@app.command()
def validate(
    config: Optional[Path] = ConfigOpt,
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest CSV (instead of --config)."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="Clinical CSV keyed by patient id."),
    run_dir: Optional[Path] = RunDirOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Check a cohort (files, masks, geometry, ids, pathology columns) and write fingerprint.json."""
    from .pipeline import validate_stage

    if config is None and manifest is None:
        raise CerviradError("validate needs --config FILE or --manifest FILE; pass one of them.")
    if manifest is not None:
        overrides = [*overrides, *_manifest_overrides(manifest, clinical)]
    cfg = load(config, overrides)
    run = open_run_dir(cfg, run_dir)
    fp = validate_stage(cfg, run, require_labels=clinical is not None or manifest is None)
    typer.echo(f"validate: {fp['n_patients']} patients OK, class counts {fp['class_counts'] or 'n/a'}; "
               f"fingerprint -> {run.path / 'fingerprint.json'}")


@app.command()
def preprocess(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Resample, z-score, slice to 256 x 256 and write the one patient-level split (splits.json)."""
    from .pipeline import preprocess_stage

    cfg = load(config, overrides)
    run = open_run_dir(cfg, run_dir)
    summary = preprocess_stage(cfg, run)
    ps = summary["per_split"]
    typer.echo(f"preprocess: {summary['slices_with_lesion']} slices with lesion, {summary['slices_without_lesion']} "
               f"without; patients train/val/test = {ps['train']['patients']}/{ps['val']['patients']}/"
               f"{ps['test']['patients']} -> {run.path}")


# --- stage commands (segmentation, features, classification, pipeline) below ---


def main() -> None:
    """Console entry point: one line and exit 2 for user errors, exit 1 for internal errors."""
    try:
        app()
    except CerviradError as e:
        msg = str(e).replace("\n", " ")
        typer.echo(f"cervirad: error: {msg}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("cervirad: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # internal error
        log.debug("internal error", exc_info=True)
        typer.echo(f"cervirad: internal error: {type(e).__name__}: {e} (rerun with -v for the traceback; "
                   "please report it)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
