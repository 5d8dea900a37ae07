"""Segmentation commands: ``preprocess``, ``plan``, ``train-seg`` and ``segment``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import CerviradError
from ..files import read_json
from ..networks import AUTO, NETWORKS
from .common import ConfigOpt, ForceOpt, RunDirOpt, SetOpt, app, load_run


@app.command()
def preprocess(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Resample, z-score, slice to 256 x 256 and write the one patient-level split (splits.json)."""
    from ..pipeline import run_stages

    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, ["preprocess"], force=force)
    summary = read_json(run.preprocess_summary)
    ps = summary["per_split"]
    typer.echo(f"preprocess: {summary['slices_with_lesion']} slices with lesion, {summary['slices_without_lesion']} "
               f"without; patients train/val/test = {ps['train']['patients']}/{ps['val']['patients']}/"
               f"{ps['test']['patients']} -> {run.path}")


@app.command()
def plan(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Derive the training plan (spacing, patch, batch, epochs, recipe, folds) from the cohort -> plan.yaml."""
    import yaml

    from ..pipeline import run_stages

    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, ["plan"], force=force)
    p = yaml.safe_load(run.plan.read_text(encoding="utf-8"))
    shown = ", ".join(f"{k.split('.')[-1]} {d['value']}" for k, d in p["decisions"].items()
                      if d["source"] == "plan" and not k.startswith("segmentation.augmentation."))
    typer.echo(f"plan: {shown or 'the config fixes the recipe (segmentation.plan: false)'}; folds {p['folds']} -> "
               f"{run.plan}")


@app.command("train-seg")
def train_seg(
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    model: Optional[str] = typer.Option(None, "--model", help=f"{', '.join(NETWORKS)} or {AUTO} (default: "
                                        "segmentation.model)."),
    folds: Optional[int] = typer.Option(None, "--folds", help="K >= 2: a K-fold ensemble on the train+val "
                                        "patients (default: segmentation.folds; 1 = one model)."),
    force: bool = ForceOpt,
    overrides: List[str] = SetOpt,
) -> None:
    """Train the CRFE (U-Net, DeepLabv3, or the best of them) network, then score it on the test patients (a killed
    training resumes)."""
    from ..pipeline import run_stages
    from ..segmentation.selection import homes

    choices = [*NETWORKS, AUTO]
    if model is not None and model not in choices:
        raise CerviradError(f"--model must be {', '.join(choices[:-1])} or {choices[-1]}, got {model!r}; pick one of "
                            "them.")
    if model is not None:
        overrides = [*overrides, f"segmentation.model={model}"]
    if folds is not None:
        overrides = [*overrides, f"segmentation.folds={folds}"]
    cfg, run = load_run(config, overrides, run_dir)
    run_stages(cfg, run, ["train-seg"], force=force)
    for arch, home in homes(run, cfg.segmentation).items():
        m = read_json(home.metrics)
        typer.echo(f"train-seg {arch}: test Dice {m['dice']['value']:.4f} "
                   f"[{m['dice']['ci_low']:.4f}, {m['dice']['ci_high']:.4f}], best epoch {m['best_epoch']} -> "
                   f"{home.dir}")
        if m.get("single_fold_test"):
            typer.echo(f"train-seg {arch}: {m['n_folds']}-fold ensemble test Dice {m['dice']['value']:.4f} vs fold 0 "
                       f"alone {m['single_fold_test']['dice']['value']:.4f}")
    if cfg.segmentation.model == "auto":
        pick = read_json(run.seg_metrics())["selection"]
        typer.echo(f"train-seg auto: the run's model is {pick['chosen']} ({pick['why']}) -> {run.segmentation_dir()}")


@app.command()
def segment(
    model: Optional[Path] = typer.Option(None, "--model", help="A model.pt from train-seg."),
    input: Optional[Path] = typer.Option(None, "--input", help="Volume file, folder of volumes, or manifest CSV."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the predicted masks (<case>.nii.gz)."),
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = RunDirOpt,
    force: bool = typer.Option(False, "--force", help="With --run-dir and --model: replace the run's own "
                               "segmentation results with this model's. With --out: write into a folder holding "
                               "files cervirad did not write (never over an input)."),
    formats: List[str] = typer.Option(["nifti"], "--format", help="nifti, dicom-seg or rtstruct (repeatable); "
                                      "the DICOM formats need DICOM input and reference its series."),
    overrides: List[str] = SetOpt,
) -> None:
    """Segment new volumes (--model --input --out), or re-score a run's test patients (--config/--run-dir)."""
    from .. import segmentation

    if input is not None or out is not None:
        if model is None or input is None or out is None:
            raise CerviradError("segment on files needs --model PATH --input FILE_OR_DIR --out DIR; pass all three.")
        from ..rundir import claim_output_folder

        claim_output_folder(out, "segment --out", force=force, inputs=[input, model],
                            owned=segmentation.segment_folder_marked)
        written = segmentation.segment_paths(model, input, out, formats=tuple(formats), say=typer.echo)
        typer.echo(f"segment: {len(written)} mask(s) -> {out}")
        return
    if config is None and run_dir is None:
        raise CerviradError("segment needs --model/--input/--out, or --config FILE [--run-dir DIR] to score a run's "
                            "test patients.")
    from ..pipeline import rescore_segmentation

    cfg, run = load_run(config, overrides, run_dir)
    m = rescore_segmentation(cfg, run, model, force)
    typer.echo(f"segment {m['model']}: test Dice {m['dice']['value']:.4f} over {m['n_patients']} patients -> "
               f"{run.seg_metrics()}")
