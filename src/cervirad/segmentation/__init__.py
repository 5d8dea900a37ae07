"""Segmentation stage: CRFE (and U-Net baseline) training, test evaluation, inference.

Entry points the CLI and the pipeline call:

- :func:`run_train` (``cervirad train-seg``): train on the run's train/val patients, then
  evaluate the best checkpoint on the test patients. Writes ``segmentation/`` (``model.pt``,
  ``last.pt``, ``train_log.csv``, ``curves.png``, ``metrics.json``, ``per_patient.csv``,
  ``overlays/``) and ``masks/<pid>.nii.gz`` for CRFE; a U-Net gets ``segmentation/unet/``
  (its masks in ``segmentation/unet/masks/``) and ``segmentation/comparison.csv``.
- :func:`run_segment` (``cervirad segment --config ... --run-dir ...``): re-evaluate a trained
  model on the run's test patients (same outputs as the evaluation part of train-seg).
- :func:`segment_paths` (``cervirad segment --model PATH --input FILE_OR_DIR --out DIR``):
  any new volume(s), masks back on each input's own grid.

Module map: ``model`` (networks), ``data`` (slices, sampling, augmentation), ``losses``,
``train`` (loop, early stopping, checkpoints), ``infer`` (checkpoint loading, prediction,
volumes), ``metrics``, ``evaluate`` (test split).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .infer import segment_paths

log = logging.getLogger(__name__)

__all__ = ["run_train", "run_segment", "segment_paths", "stage_name", "output_dir"]


def stage_name(arch: str) -> str:
    """run.json stage record of one architecture: 'train-seg' (CRFE) or 'train-seg-unet'."""
    return "train-seg" if arch == "crfe" else f"train-seg-{arch}"


def output_dir(arch: str) -> str:
    """Run-relative output folder: 'segmentation' for CRFE, 'segmentation/<arch>' otherwise."""
    return "segmentation" if arch == "crfe" else f"segmentation/{arch}"


def masks_dir(arch: str) -> str:
    """Predicted test masks: 'masks' (read by the feature stage) for CRFE, else under the model's folder."""
    return "masks" if arch == "crfe" else f"{output_dir(arch)}/masks"


def _ensure_preprocessed(cfg, run) -> None:
    """Run preprocess when the run has none; check the stored channels match the config."""
    from ..pipeline import preprocess_stage

    summary = run.path / "preprocess" / "summary.json"
    if not (run.path / "splits.json").is_file() or not summary.is_file():
        preprocess_stage(cfg, run)
    from ..errors import InputError

    channels = json.loads(summary.read_text(encoding="utf-8"))["channels"]
    if list(channels) != list(cfg.segmentation.input_sequences):
        raise InputError(f"Run '{run.path}' was preprocessed with channels {channels} but "
                         f"segmentation.input_sequences is {list(cfg.segmentation.input_sequences)}; rerun "
                         "`cervirad preprocess` with this config or use the matching setting.")


def _train_key(cfg, run, arch: str) -> str:
    from ..config import hash_obj

    splits = json.loads((run.path / "splits.json").read_text(encoding="utf-8"))
    d = cfg.to_dict()
    return hash_obj({"arch": arch, "seed": cfg.run.seed, "preprocess": d["preprocess"],
                     "segmentation": d["segmentation"], "splits": {k: splits[k] for k in ("train", "val", "test")}})


def run_train(cfg, run, model_name: str | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train ``model_name`` (default ``segmentation.model``; plus U-Net when ``also_train_unet``)
    and evaluate each on the test split. Returns {arch: metrics dict}."""
    arch = model_name or cfg.segmentation.model
    archs = [arch] + (["unet"] if cfg.segmentation.also_train_unet and arch != "unet" else [])
    _ensure_preprocessed(cfg, run)
    results = {a: _train_one(cfg, run, a, resume, progress) for a in archs}
    write_comparison(run.path)
    return results


def _train_one(cfg, run, arch: str, resume: bool, progress: bool) -> dict:
    from ..errors import InputError
    from ..pipeline import ensure_valid_cohort
    from .data import load_slice_set
    from .evaluate import save_overlays, write_evaluation, evaluate_patients
    from .infer import load_model
    from .train import Trainer, plot_curves

    name, rel = stage_name(arch), output_dir(arch)
    key = _train_key(cfg, run, arch)
    if resume and run.is_current(name, key) and (run.path / rel / "metrics.json").is_file():
        log.info("%s: already finished with these settings; nothing to resume", name)
        return json.loads((run.path / rel / "metrics.json").read_text(encoding="utf-8"))
    cohort = ensure_valid_cohort(cfg, run)
    train, val = load_slice_set(run.path, "train"), load_slice_set(run.path, "val")
    if len(val.rows) == 0:
        raise InputError("The split has no validation patients, which early stopping needs; set "
                         "preprocess.split.val > 0 and rerun preprocess.")
    with run.stage(name, key=key, resumable=True) as st:
        work = st.dir(rel)
        if not resume:
            for f in ("last.pt", "model.pt", "train_log.csv"):
                (work / f).unlink(missing_ok=True)
        trainer = Trainer(cfg, arch, train, val, work, key, progress)
        resumed = trainer.resume() if resume else False
        result = trainer.fit()
        plot_curves(result.log, work / "curves.png", f"{arch.upper()} training")
        model = load_model(work / "model.pt", cfg.segmentation.device)
        test_ids = sorted(load_slice_set_ids(run.path, "test"))
        if not test_ids:
            raise InputError("The split has no test patients; set preprocess.split.test > 0 and rerun preprocess.")
        mdir = st.dir(masks_dir(arch))
        per_patient, overlays = evaluate_patients(model, run.path, cohort, test_ids, mdir,
                                                  cfg.segmentation.infer_batch_size, cfg.segmentation.n_overlays)
        save_overlays(overlays, work / "overlays", arch.upper())
        extra = {"model": arch, "best_epoch": result.best_epoch, "best_val_dice": result.best_val_dice,
                 "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "resumed": resumed,
                 "train_seconds": round(result.seconds, 1), "train_slices_per_s": result.train_slices_per_s,
                 "parameters": sum(p.numel() for p in model.net.parameters()), "device": str(model.device)}
        summary = write_evaluation(per_patient, work, cfg.segmentation.bootstrap, cfg.run.seed, extra)
        _drop_stale(run.path, [f"{rel}/overlays", masks_dir(arch)])
        st.info.update({"best_val_dice": result.best_val_dice, "test_dice": summary["dice"]["value"],
                        "epochs_run": result.epochs_run})
    return summary


def _drop_stale(run_path: Path, rels: list[str]) -> None:
    """Remove output folders that the finishing stage replaces as a whole (promotion merges folders,
    so overlays or masks of an earlier run would otherwise survive next to the new ones)."""
    import shutil

    for rel in rels:
        shutil.rmtree(Path(run_path) / rel, ignore_errors=True)


def load_slice_set_ids(run_path: Path, part: str) -> list[str]:
    from ..cohort import load_splits

    return load_splits(run_path)[part]


def run_segment(cfg, run, model_name: str | None = None, model_path: str | Path | None = None) -> dict:
    """Evaluate a trained model (default: the run's own) on the run's test patients; rewrite its outputs."""
    from ..errors import InputError
    from ..pipeline import ensure_valid_cohort
    from .evaluate import evaluate_patients, save_overlays, write_evaluation
    from .infer import load_model

    arch = model_name or cfg.segmentation.model
    rel = output_dir(arch)
    path = Path(model_path) if model_path else run.path / rel / "model.pt"
    if not path.is_file():
        raise InputError(f"No trained model at '{path}'; run `cervirad train-seg` for this run first or pass --model.")
    _ensure_preprocessed(cfg, run)
    cohort = ensure_valid_cohort(cfg, run)
    model = load_model(path, cfg.segmentation.device, expect_channels=len(cfg.segmentation.input_sequences))
    arch = model.info["arch"]
    rel = output_dir(arch)
    test_ids = load_slice_set_ids(run.path, "test")
    with run.stage(f"segment-{arch}", key=str(path)) as st:
        per_patient, overlays = evaluate_patients(model, run.path, cohort, test_ids, st.dir(masks_dir(arch)),
                                                  cfg.segmentation.infer_batch_size, cfg.segmentation.n_overlays)
        work = st.dir(rel)
        save_overlays(overlays, work / "overlays", arch.upper())
        old = run.path / rel / "metrics.json"
        keep = {k: v for k, v in json.loads(old.read_text(encoding="utf-8")).items() if not isinstance(v, dict)} if old.is_file() else {}
        keep.update({"model": arch, "model_path": str(path), "device": str(model.device)})
        summary = write_evaluation(per_patient, work, cfg.segmentation.bootstrap, cfg.run.seed, keep)
        _drop_stale(run.path, [f"{rel}/overlays", masks_dir(arch)])
    write_comparison(run.path)
    return summary


COMPARISON_METRICS = ("dice", "iou_foreground", "iou_mean_fg_bg", "precision", "recall", "specificity",
                      "pixel_accuracy", "mae", "hausdorff_mm", "hd95_mm", "slice_dice", "infer_ms_per_slice")


def write_comparison(run_path: Path) -> Path | None:
    """``segmentation/comparison.csv``: one row per trained model, value and CI per metric."""
    import pandas as pd

    from ..io import write_table

    rows = []
    for arch in ("crfe", "unet"):
        p = Path(run_path) / output_dir(arch) / "metrics.json"
        if not p.is_file():
            continue
        m = json.loads(p.read_text(encoding="utf-8"))
        row = {"model": arch, "n_patients": m.get("n_patients"), "parameters": m.get("parameters"),
               "best_epoch": m.get("best_epoch"), "train_seconds": m.get("train_seconds")}
        for k in COMPARISON_METRICS:
            v = m.get(k) or {}
            row[k], row[f"{k}_ci_low"], row[f"{k}_ci_high"] = v.get("value"), v.get("ci_low"), v.get("ci_high")
        rows.append(row)
    if len(rows) < 2:
        return None
    return write_table(pd.DataFrame(rows), Path(run_path) / "segmentation" / "comparison.csv")
