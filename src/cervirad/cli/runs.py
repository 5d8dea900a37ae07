"""Whole-run commands: ``evaluate`` (external validation of a finished run), ``run-all`` and ``report``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CerviradError
from .common import ConfigOpt, ForceOpt, RunDirOpt, SetOpt, app, load_run


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="A finished run folder (run-all) whose models are applied unchanged."),
    out: Path = typer.Option(..., "--out", help="Folder for the external validation (a run folder of its own)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with the external cohort's data "
                                          "section (manifest, clinical, sequences, ...)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="External manifest CSV (instead of --config)."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="External clinical CSV (labels: optional)."),
    force: bool = ForceOpt,
    harmonize: bool = typer.Option(False, "--harmonize", help="A model trained with ComBat (classification."
                                   "harmonize: combat): estimate an unseen scanner's ComBat parameters from the "
                                   "external patients' own features (transductive, no labels; marked in the report)."),
) -> None:
    """External validation: apply a finished run, unchanged, to a new cohort (segment, features, predict, score)."""
    from ..config.loading import read_yaml_file
    from ..layout import Layout
    from ..pipeline import evaluate_external, external_config

    if (config is None) == (manifest is None):
        raise CerviradError("evaluate needs the external cohort: --config COHORT.yaml or --manifest FILE "
                            "[--clinical FILE], not both.")
    if config is not None:
        if not config.is_file():
            raise CerviradError(f"Config file '{config}' not found; pass the external cohort's YAML.")
        doc = read_yaml_file(config) or {}
        if not isinstance(doc, dict):
            raise CerviradError(f"Config file '{config}' must hold a mapping (the external cohort's data section), "
                                f"got {type(doc).__name__}.")
        data = doc.get("data", doc)
        if not isinstance(data, dict):
            raise CerviradError(f"Config file '{config}': 'data' must be a mapping (manifest, clinical, sequences, "
                                f"...), got {type(data).__name__}.")
    else:
        data = {"manifest": str(manifest), "clinical": str(clinical) if clinical else None}
    cfg = external_config(run, data, out.name)
    s = evaluate_external(cfg, run, out, force, harmonize)
    parts = [f"{m} masks: accuracy {v['accuracy']:.3f}, macro AUC "
             + (f"{v['auc_macro']:.3f}" if v.get("auc_macro") is not None else "undefined (see the report)")
             for m, v in s["sources"].items() if v.get("accuracy") is not None]
    typer.echo(f"evaluate: {s['model']} from {run} -> {out}; " + ("; ".join(parts) or "no labels, predictions only")
               + (f"; {len(s['shift_warnings'])} shift warning(s)" if s.get("shift_warnings") else "")
               + f"; report {Layout(out).external_report}")


@app.command("run-all")
def run_all(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    start: Optional[str] = typer.Option(None, "--from", help="Redo this stage and every later one."),
    force: bool = typer.Option(False, "--force", help="Redo every stage (and replace another run's artifacts)."),
    overrides: List[str] = SetOpt,
) -> None:
    """validate -> preprocess -> plan -> train-seg (+ test masks) -> features (manual, predicted) -> classify -> report."""
    from ..pipeline import run_stages

    cfg, run = load_run(config, overrides, run_dir)
    times = run_stages(cfg, run, force=force, start=start)
    ran = ", ".join(f"{k} {v:.0f}s" for k, v in times.items()) or "nothing to redo"
    typer.echo(f"run-all: {ran}; report -> {run.report}")


@app.command()
def report(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """(Re)build the self-contained report.html of a run from its artifacts."""
    from ..pipeline import run_stages

    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, ["report"], force=force)
    typer.echo(f"report -> {run.report}")
