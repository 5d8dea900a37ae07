"""Segmentation stage: CRFE, U-Net and DeepLabv3 training, test evaluation, inference.

Entry points:

- :func:`train_stage` (stage ``train-seg`` of :mod:`cervirad.stages`): train on the run's
  train/val patients, then evaluate the best checkpoint on the test patients. Writes
  ``segmentation/`` (``model.pt``, ``last.pt``, ``train_log.csv``, ``curves.png``,
  ``metrics.json``, ``per_patient.csv``, ``overlays/``) and ``masks/<pid>.nii.gz`` for the run's
  network (``segmentation.model``); every network trained beside it (``segmentation.compare``,
  ``also_train_unet``) gets ``segmentation/<name>/`` (its masks in ``segmentation/<name>/masks/``)
  and ``segmentation/comparison.csv`` lists them all; ``model: auto`` trains every candidate
  beside and copies the one with the highest validation Dice to ``segmentation/`` (:mod:`.selection`).
  With ``segmentation.folds`` = K >= 2 (``train-seg --folds K``) it trains K models on the train+val patients (:mod:`.folds`) in ``segmentation/fold_<k>/``,
  writes the ensemble as ``model.pt`` and ``fold_curves.png``, and scores fold 0 alone on the
  test patients too (``fold_0/metrics.json``; ``single_fold_test`` beside the ensemble's).
- :func:`evaluate_run` (``cervirad segment --run-dir ...``): re-evaluate a trained model on the
  run's test patients (same outputs as the evaluation part of train-seg).
- :func:`segment_paths` (``cervirad segment --model PATH --input FILE_OR_DIR --out DIR``):
  any new volume(s), masks back on each input's own grid.

Module map (the stage is this module; one job per module):

- planning: ``plan`` (nnU-Net's self-configuration -> ``plan.yaml``, stage ``plan``), ``budget``
  (how ``budget_minutes`` is shared; epochs the budget affords, by a timing probe);
- networks: ``model`` (CRFE, U-Net and the registry of networks), ``deeplab`` (DeepLabv3),
  ``selection`` (which networks train where, ``model: auto``), ``checkpoint`` (the network a config
  describes; what ``model.pt`` holds, written and read back);
- training: ``data`` (slices, sampling, augmentation), ``augment`` (nnU-Net's extra augmentations),
  ``context`` (2.5-D neighbour slices), ``losses``, ``optim`` (optimiser, schedule, budget re-plan),
  ``train`` (loop, early stopping, resume), ``folds`` (k-fold ensembles), ``pretrain`` (self-supervised
  warm start), ``distributed`` (torchrun);
- inference and scoring: ``infer`` (model loading, prediction, volumes back on their grid), ``tta``
  (test-time mirroring, Gaussian sliding window), ``postprocess`` (component selection, one-lesion
  fallback), ``cost`` (whether mirroring and the ensemble are worth their time), ``metrics``,
  ``scoring`` (the test patients: predict, restore, write, score, overlays).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..splits import load_splits
from ..errors import InputError
from ..files import read_json, write_json
from ..layout import COMPARISON, CURVES, MASKS, OVERLAYS, PRETRAIN_PT, Layout
from .infer import segment_folder_marked, segment_paths

log = logging.getLogger(__name__)

__all__ = ["train_stage", "evaluate_run", "segment_paths", "segment_folder_marked", "write_comparison"]


def _check_channels(cfg, run) -> None:
    """The preprocessed channels must be the configured input sequences."""
    channels = read_json(run.preprocess_summary)["channels"]
    if list(channels) != list(cfg.segmentation.input_sequences):
        raise InputError(f"Run '{run.path}' was preprocessed with channels {channels} but "
                         f"segmentation.input_sequences is {list(cfg.segmentation.input_sequences)}; rerun "
                         "`cervirad preprocess` with this config or use the matching setting.")


def train_stage(cfg, inputs, st, progress: bool = True) -> dict:
    """The train-seg stage: train ``segmentation.model`` (plus the networks of ``segmentation.compare`` /
    ``also_train_unet``; with ``auto`` every candidate, keeping the highest validation Dice: :mod:`.selection`)
    on the run's train/val patients and score each on its test patients. ``inputs``: the stage's declared
    artifacts (preprocess/, splits.json, plan.yaml) and the cohort.
    A killed training resumes from ``last.pt`` when the stage key is unchanged. Returns {arch: metrics}.
    With ``segmentation.plan`` the run's ``plan.yaml`` sets the recipe (:func:`.plan.planned_config`)."""
    from .plan import planned_config
    from .selection import homes, pick_best, promote

    cfg = planned_config(cfg, inputs)
    _check_channels(cfg, inputs)
    split = stage_budget(cfg, inputs)
    if split:
        log.info("train-seg: budget split: %s", split["why"])
        st.info["budget_split"] = split
    where = homes(st, cfg.segmentation)
    results = {a: _train_one(cfg, inputs, inputs.cohort, home, st.key, progress, split) for a, home in where.items()}
    if cfg.segmentation.model == "auto":
        best, why = pick_best({a: m.get("best_val_dice") for a, m in results.items()})
        log.info("train-seg: segmentation.model auto keeps %s: %s", best, why)
        run_model = promote(where[best], st)
        m = read_json(run_model.metrics)
        m["selection"] = {"rule": "segmentation.model auto", "chosen": best, "why": why,
                          "val_dice": {a: r.get("best_val_dice") for a, r in results.items()}}
        write_json(run_model.metrics, m)
        st.info["auto_model"] = best
    write_comparison(st, [inputs, st], list(where.values()))
    st.info.update({f"{a}_test_dice": m["dice"]["value"] for a, m in results.items()})
    return results


def stage_budget(cfg, run) -> dict | None:
    """How the stage's ``budget_minutes`` is split (plan.yaml's ``budget_split``, else computed from the
    config's folds); a split leaving no training time is refused."""
    from .budget import budget_split
    from .plan import read_plan

    if not cfg.segmentation.budget_minutes:
        return None
    split = (read_plan(run.plan) or {}).get("budget_split") if cfg.segmentation.plan else None
    split = split or budget_split(cfg, cfg.segmentation.folds)
    if split["model_minutes"] <= 0:
        raise InputError(f"segmentation.budget_minutes ({cfg.segmentation.budget_minutes:g}) leaves no training time: "
                         f"{split['why']}; raise the budget or lower segmentation.pretrain_minutes.")
    return split


def _job_budget(split: dict | None) -> dict:
    """TrainJob fields of one model under ``split``."""
    return {"budget_minutes": split["model_minutes"], "max_epochs": split["max_epochs"]} if split else {}


def _train_one(cfg, run, cohort, home, key: str, progress: bool, split: dict | None = None) -> dict:
    if cfg.segmentation.folds >= 2:
        return _train_ensemble(cfg, run, cohort, home, key, progress, cfg.segmentation.folds, split)
    from .distributed import announce
    from .infer import load_model
    from .cost import choose_inference
    from ..networks import network_label
    from .model import count_parameters
    from .train import TrainJob, plot_curves

    if not load_splits(run.path)["val"]:
        raise InputError("The split has no validation patients, which early stopping needs; set "
                         "preprocess.split.val > 0 and rerun preprocess.")
    arch = home.arch
    work = home.dir
    work.mkdir(parents=True, exist_ok=True)
    job = TrainJob(cfg, arch, run.path, work, key, **_job_budget(split), pretrain_path=work / PRETRAIN_PT)
    pretrained = _warm_start(job)
    announce(job)  # under torchrun the other ranks train it alongside (.distributed)
    trainer = job.trainer(progress)
    resumed = trainer.resume()
    result = trainer.fit()
    plot_curves(result.log, home.dir / CURVES, f"{network_label(arch)} training")
    cost = choose_inference(cfg, run, home.model, [(home.model, trainer.val_set.patients)])
    post = _choose_postprocessing(cfg, run, home.model, [(home.model, trainer.val_set.patients)])
    model = load_model(home.model, cfg.segmentation.device)
    extra = {"model": arch, "best_epoch": result.best_epoch, "best_val_dice": result.best_val_dice,
             "postprocessing": post, "warm_start": pretrained, "budget_minutes": job.budget_minutes,
             "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "resumed": resumed,
             "train_seconds": round(result.seconds, 1), "train_slices_per_s": result.train_slices_per_s,
             "parameters": count_parameters(model.net), "unet_width": model.info.get("unet_width"),
             "net_options": model.info.get("net_options") or {}, "device": str(model.device),
             "inference_decision": cost}
    return _evaluate(cfg, run, cohort, home, model, extra)


def _choose_postprocessing(cfg, run, model_path: Path, parts: list[tuple[Path, list[str]]]) -> dict:
    """Post-processing, decided once per training on the validation patients (each predicted by the model
    of ``parts`` listing it: one model and its validation patients, or every fold's model and its held-out
    patients), as nnU-Net does. ``lesions: any`` with ``component_selection: auto``: component selection
    kept only if it raises their mean 3D Dice. ``lesions: one``: component selection always, and the
    fallback threshold for a volume with no voxel above the threshold (:mod:`.postprocess`) chosen there.
    The choice is written into ``model_path``."""
    from .checkpoint import read_checkpoint, save_checkpoint
    from .metrics import overlap_metrics
    from .postprocess import FALLBACK_CANDIDATES, choose_fallback_scores, component_at_max, select_component

    s = cfg.segmentation
    one = s.lesions == "one"
    out: dict = {"component_selection": s.component_selection == "always" or one, "rule": s.component_selection,
                 "lesions": s.lesions}
    if one or s.component_selection == "auto":
        without, with_sel, fallback = [], [], []
        for probs, truth in _validation_predictions(cfg, run, parts, _decided_mirror(model_path, s)):
            without.append(overlap_metrics(probs > s.threshold, truth)["dice"])
            with_sel.append(overlap_metrics(select_component(probs, s.threshold) > s.threshold, truth)["dice"])
            if one:
                fallback.append({t: overlap_metrics(component_at_max(probs, t), truth)["dice"]
                                 for t in FALLBACK_CANDIDATES})
        out.update(val_dice_without=float(np.mean(without)), val_dice_with=float(np.mean(with_sel)),
                   n_val_patients=len(without))
        if not one:
            out["component_selection"] = out["val_dice_with"] > out["val_dice_without"]
        else:
            out["fallback_threshold"], out["fallback_val_dice"] = choose_fallback_scores(fallback)
    ck = read_checkpoint(model_path)
    ck.update({k: out[k] for k in POST_KEYS if k in out})
    save_checkpoint(ck, model_path)
    log.info("train-seg: component selection %s, lesions %s%s (%s)", "on" if out["component_selection"] else "off",
             s.lesions, f", fallback threshold {out['fallback_threshold']:g}" if one else "",
             ", ".join(f"{k} {v:.4f}" for k, v in out.items() if k.startswith("val_dice_")) or f"rule {out['rule']}")
    return out


POST_KEYS = ("component_selection", "lesions", "fallback_threshold")


def _validation_predictions(cfg, run, parts: list[tuple[Path, list[str]]], mirror: bool):
    """(probabilities, reference mask) of every validation patient, each by its model, with progress lines."""
    from ..preprocess import load_patient_slices
    from ..progress import progress
    from .infer import load_model, predict_slices

    s = cfg.segmentation
    pairs = [(m, pid) for m, ids in parts for pid in ids]
    model, current = None, None
    for part_model, pid in progress(pairs, len(pairs), "post-processing choice (validation)", "patient", log):
        if part_model != current:
            model = load_model(part_model, s.device, tta_mirror=mirror, sliding_window=s.sliding_window)
            current = part_model
        images, truth = load_patient_slices(run.path, pid)
        probs, _ = predict_slices(model, images, s.infer_batch_size)
        yield probs, np.asarray(truth) > 0


def _warm_start(job) -> dict | None:
    """Pretrain the job's network (segmentation.pretrain_minutes > 0) unless its weights exist; what was done."""
    from .checkpoint import read_checkpoint_any
    from .pretrain import warm_start

    path = warm_start(job)
    return None if path is None else read_checkpoint_any(path)["info"]


def _decided_mirror(model_path: Path, s) -> bool:
    """Test-time mirroring as training decided it for ``model_path`` (:mod:`.cost`), within the config's."""
    from .checkpoint import read_checkpoint

    return bool(s.tta_mirror and (read_checkpoint(model_path).get("inference") or {}).get("tta_mirror", True))


def _train_ensemble(cfg, run, cohort, home, key: str, progress: bool, k: int,
                    split: dict | None = None) -> dict:
    """``k`` models on the train+val patients split into ``k`` folds (:mod:`.folds`), each in its own
    folder; post-processing chosen on the pooled out-of-fold predictions; fold 0 alone and the
    ensemble both scored on the test patients (``single_fold_test`` in the ensemble's metrics)."""
    import time

    from .checkpoint import read_checkpoint, save_checkpoint
    from .cost import choose_inference
    from .distributed import announce
    from .folds import ensemble_checkpoint, fold_curves_path, fold_model, plot_fold_curves, run_fold_parts
    from .infer import load_model
    from ..config.loading import with_overrides
    from ..networks import network_label
    from .model import count_parameters
    from .scoring import evaluate_patients, write_evaluation
    from .train import TrainJob, plot_curves

    arch, label = home.arch, network_label(home.arch)
    t0 = time.perf_counter()
    patients, parts = run_fold_parts(run.path, k, cfg.run.seed)
    log.info("train-seg %s: %d-fold ensemble over %d training+validation patients (held out per fold: %s)", arch, k,
             len(patients), ", ".join(str(len(p)) for p in parts))
    results, resumed, pools = [], [], {}  # pools: the train+val slices, read once for every fold
    pretrain_path = home.dir / PRETRAIN_PT  # one warm start per network, shared by its folds
    pretrained = None
    for i, held in enumerate(parts):
        work = home.fold(i)
        work.mkdir(parents=True, exist_ok=True)
        fold_cfg = with_overrides(cfg, [f"run.seed={cfg.run.seed + i}"])  # fold 0 = the run's seed
        job = TrainJob(fold_cfg, arch, run.path, work, key, tuple(p for p in patients if p not in held), tuple(held),
                       **_job_budget(split), pretrain_path=pretrain_path)
        pretrained = _warm_start(job) if i == 0 else pretrained
        announce(job)
        trainer = job.trainer(progress, pools)
        resumed.append(trainer.resume())
        results.append(trainer.fit())
        plot_curves(results[-1].log, work / CURVES, f"{label} fold {i} training")
        log.info("train-seg %s fold %d/%d: best val Dice %.4f at epoch %d", arch, i + 1, k, results[-1].best_val_dice,
                 results[-1].best_epoch)
    plot_fold_curves([r.log for r in results], fold_curves_path(home.dir), f"{label}: {k}-fold validation curves")
    models = [fold_model(home.fold(i)) for i in range(k)]
    save_checkpoint(ensemble_checkpoint(models, parts, read_checkpoint), home.model)
    cost = choose_inference(cfg, run, home.model, list(zip(models, parts)), [r.best_val_dice for r in results])
    post = _choose_postprocessing(cfg, run, home.model, list(zip(models, parts)))
    s = cfg.segmentation
    single = load_model(models[0], s.device, tta_mirror=_decided_mirror(home.model, s))
    single.info.update({k: post[k] for k in POST_KEYS if k in post})  # the ensemble's post-processing
    test_ids = load_splits(run.path)["test"]
    per_patient, _ = evaluate_patients(single, run.path, cohort, test_ids, home.fold(0) / MASKS,
                                       s.infer_batch_size, 0, cfg.data.mask_label)
    fold0 = write_evaluation(per_patient, home.fold(0), s.bootstrap, cfg.run.seed,
                             {"model": arch, "fold": 0, "n_folds": k})
    model = load_model(home.model, s.device)
    per_fold = [{"fold": i, "n_train_patients": len(patients) - len(held), "val_patients": held,
                 "best_epoch": r.best_epoch, "best_val_dice": r.best_val_dice, "epochs_run": r.epochs_run,
                 "stopped_early": r.stopped_early, "train_seconds": round(r.seconds, 1), "resumed": res}
                for i, (held, r, res) in enumerate(zip(parts, results, resumed))]
    extra = {"model": arch, "n_folds": k, "per_fold": per_fold, "best_epoch": [r.best_epoch for r in results],
             "best_val_dice": float(np.mean([r.best_val_dice for r in results])), "postprocessing": post,
             "epochs_run": sum(r.epochs_run for r in results), "stopped_early": all(r.stopped_early for r in results),
             "resumed": any(resumed), "train_seconds": round(time.perf_counter() - t0, 1),
             "warm_start": pretrained, "budget_minutes": split["model_minutes"] if split else None,
             "train_slices_per_s": float(np.mean([r.train_slices_per_s for r in results])),
             "parameters": count_parameters(model.net), "unet_width": model.info.get("unet_width"),
             "net_options": model.info.get("net_options") or {}, "device": str(model.device),
             "inference_decision": cost,
             "single_fold_test": {m: fold0.get(m) for m in ("dice", "hd95_mm", "detection_rate", "n_patients")}}
    return _evaluate(cfg, run, cohort, home, model, extra)


def _evaluate(cfg, run, cohort, home, model, extra: dict) -> dict:
    """Predict, restore, write and score the test patients into ``home`` (masks, overlays, metrics)."""
    from .scoring import evaluate_patients, save_overlays, write_evaluation

    test_ids = load_splits(run.path)["test"]
    if not test_ids:
        raise InputError("The split has no test patients; set preprocess.split.test > 0 and rerun preprocess.")
    from ..networks import network_label

    per_patient, overlays = evaluate_patients(model, run.path, cohort, test_ids, home.masks,
                                              cfg.segmentation.infer_batch_size, cfg.segmentation.n_overlays,
                                              cfg.data.mask_label, cfg.segmentation.export)
    work = home.dir
    save_overlays(overlays, work / OVERLAYS, network_label(home.arch))
    inference = {"tta_mirror": model.tta_mirror, "sliding_window": model.sliding_window,
                 "train_patch": model.train_patch, "n_models": len(model.nets),
                 "context_slices": model.context, "lesions": model.postprocessing.lesions}  # what produced these numbers
    if "lesion_fallback" in per_patient:  # one lesion per patient: cases the never-empty fallback produced
        extra = {**extra, "n_lesion_fallback": int(per_patient.lesion_fallback.sum())}
    return write_evaluation(per_patient, work, cfg.segmentation.bootstrap, cfg.run.seed,
                            {**extra, "inference": inference})


def evaluate_run(cfg, run, cohort, model_path: Path, out: Layout) -> dict:
    """`cervirad segment --run-dir`: score a trained model on the run's test patients; its masks, overlays
    and metrics become the run's segmentation results (``segmentation/``, ``masks/`` in ``out``)."""
    from .infer import load_model
    from .selection import run_home

    _check_channels(cfg, run)
    s = cfg.segmentation
    model = load_model(model_path, s.device, expect_channels=len(s.input_sequences),
                       tta_mirror=None if s.tta_mirror else False,  # on: as training decided (.cost)
                       sliding_window=s.sliding_window)
    arch = model.info["arch"]
    old = run.seg_metrics()
    keep = {k: v for k, v in read_json(old).items()
            if not isinstance(v, dict)} if old.is_file() else {}
    if keep.get("model", arch) != arch:  # the run's results were another network's: nothing of them applies
        keep = {}
    keep.update({"model": arch, "model_path": str(model_path), "device": str(model.device)})
    return _evaluate(cfg, run, cohort, run_home(out, arch), model, keep)


COMPARISON_METRICS = ("dice", "iou_foreground", "iou_mean_fg_bg", "precision", "recall", "specificity",
                      "pixel_accuracy", "mae", "detection_rate", "hausdorff_mm", "hd95_mm", "hd95_mm_detected",
                      "slice_dice", "infer_ms_per_slice")


def write_comparison(out: Layout, sources: list[Layout], homes: list | None = None) -> Path | None:
    """``segmentation/comparison.csv`` in ``out``: one row per trained network (``homes``, below ``out``;
    None = the run's model and every ``segmentation/<name>/`` of a registered network), value and CI per
    metric, each network's metrics read from the first of ``sources`` that has them. Written when at least
    two networks were trained."""
    import pandas as pd

    from ..io import write_table
    from ..networks import NETWORKS
    from .selection import run_home, side_home

    if homes is None:
        homes = [run_home(out, "")] + [side_home(out, a) for a in NETWORKS]
    rows = []
    for home in homes:
        rel = home.metrics.relative_to(out.root)
        p = next((src.root / rel for src in reversed(sources) if (src.root / rel).is_file()), None)
        if p is None:
            continue
        m = read_json(p)
        row = {"model": m.get("model") or home.arch, "n_patients": m.get("n_patients"),
               "parameters": m.get("parameters"), "unet_width": m.get("unet_width"),
               "deeplab_base": (m.get("net_options") or {}).get("base"), "n_folds": m.get("n_folds", 1),
               "best_epoch": m.get("best_epoch"), "best_val_dice": m.get("best_val_dice"),
               "train_seconds": m.get("train_seconds")}
        for k in COMPARISON_METRICS:
            v = m.get(k) or {}
            row[k], row[f"{k}_ci_low"], row[f"{k}_ci_high"] = v.get("value"), v.get("ci_low"), v.get("ci_high")
        rows.append(row)
    if len(rows) < 2:
        return None
    return write_table(pd.DataFrame(rows), out.segmentation_dir() / COMPARISON)
