"""The time budget of train-seg (``segmentation.budget_minutes``): how the stage's minutes are shared, and the
epochs a model's share affords. The plan (:mod:`.plan`) records both in ``plan.yaml``; train-seg reads the split
back (``budget_split``) and re-plans its epochs after the first real one (:func:`.optim.replanned_epochs`).

Epochs (``segmentation.epochs``): a probe times one training step of the planned network at the
planned patch (the fastest of three after a warm-up step; batch 2, scaled linearly to the batch) plus
the loader (augmentation) per sample; validation of a whole slice is estimated as 1/3 of a training
step per pixel. An epoch holds every training slice,
but at most 1/``MIN_EPOCHS`` of the budget (``max_train_slices_per_epoch``), and validation at
most ``VAL_SHARE`` of an epoch's time (``max_val_slices``); epochs = what fits the budget,
at most the config's ``epochs``. Training also stops when the budget is spent. Without a budget
nothing is probed and the config's epochs stand.

The budget is the WHOLE stage as the user reads it (:func:`budget_split`): the scoring after training
(:func:`scoring_minutes`, at least ``SCORING_SHARE``), the warm start of every network, and the rest
shared equally by the models (every fold of every network).
"""
from __future__ import annotations

import time

import numpy as np

from ..config.schema import Config

MIN_EPOCHS = 10  # an epoch takes at most 1/MIN_EPOCHS of the budget
VAL_SHARE = 0.25  # validation takes at most this share of an epoch's time
VAL_COST = 1 / 3  # forward-only cost of a pixel relative to a training step
SCORING_SHARE = 0.15  # of the stage budget kept for post-processing choice and test scoring (budget_split)


def architectures(cfg: Config) -> list[str]:
    """The networks train-seg trains, in order (:func:`.selection.trained_networks`: the run's model, then
    ``segmentation.compare`` / the U-Net baseline; for ``auto`` every candidate)."""
    from .selection import trained_networks

    return trained_networks(cfg.segmentation)


PATIENT_OVERHEAD_S = 2.0  # per scored patient: restoration onto its grid, metrics, writing its mask


def windows_per_slice(hw: tuple[float, float], patch: int, sliding: bool) -> float:
    """Network passes of one slice in patch-sized units: sliding windows, or the whole slice's pixel ratio."""
    from .tta import window_starts

    h, w = (max(1, int(round(v))) for v in hw)
    if sliding and (h > patch or w > patch):
        return float(len(window_starts(h, min(patch, h))) * len(window_starts(w, min(patch, w))))
    return h * w / float(patch * patch)


def scoring_minutes(cfg: Config, folds: int, s_per_sample: float, slice_hw, patch: int,
                    n_val_patients: float, n_test_patients: float, slices_per_patient: float) -> float:
    """Estimated minutes of the scoring after training: the post-processing choice (each validation patient by
    its model) and the test patients (by every ensemble member, plus fold 0 alone for an ensemble), each slice
    costing ``VAL_COST`` x a training sample per patch-sized window (averaged over the cohort's slice shapes
    ``slice_hw``, a list of (rows, cols)), times 4 with test-time mirroring, plus ``PATIENT_OVERHEAD_S`` per
    scored patient. Checked on the 37 STS volumes (one CRFE, 2.5-D, mirroring + windows, probe 0.088 s per
    sample): estimated 3.0 min, measured 2.9 min of scoring after training (scripts/bench/sts_cv.py fold 1)."""
    s = cfg.segmentation
    windows = float(np.mean([windows_per_slice(hw, patch, s.sliding_window == "auto") for hw in slice_hw]))
    per_slice = s_per_sample * VAL_COST * windows * (4 if s.tta_mirror else 1)
    members = max(1, int(folds))
    test_passes = n_test_patients * (members + (1 if members > 1 else 0))
    seconds = per_slice * slices_per_patient * (n_val_patients + test_passes)
    seconds += PATIENT_OVERHEAD_S * (n_val_patients + test_passes)
    return float(seconds * len(architectures(cfg)) / 60.0)


def budget_split(cfg: Config, folds: int, scoring_min: float | None = None) -> dict | None:
    """How ``segmentation.budget_minutes`` (the WHOLE train-seg stage, as the user reads it) is spent: the
    scoring after training (``scoring_min`` as estimated by :func:`scoring_minutes`, at least
    ``SCORING_SHARE`` of the budget), ``pretrain_minutes`` per network, the rest shared equally by the
    models (every fold of every network). None without a budget."""
    s = cfg.segmentation
    if not s.budget_minutes:
        return None
    archs = architectures(cfg)
    n_models = len(archs) * max(1, int(folds))
    reserve = max(s.budget_minutes * SCORING_SHARE, scoring_min or 0.0)
    pretrain = s.pretrain_minutes * len(archs)
    per_model = (s.budget_minutes - reserve - pretrain) / n_models
    return {"total_minutes": float(s.budget_minutes), "architectures": archs, "folds": int(folds),
            "n_models": n_models, "scoring_reserve_minutes": round(reserve, 3),
            "pretrain_minutes_per_network": float(s.pretrain_minutes), "model_minutes": round(per_model, 3),
            "max_epochs": int(s.epochs),
            "why": (f"{s.budget_minutes:g} min for the stage = scoring reserve {reserve:.1f} min"
                    f" + warm start {pretrain:g} min + {n_models} model(s) x {per_model:.2f} min "
                    f"({', '.join(archs)}, {folds} fold(s) each)")}


def plan_schedule(budget_minutes: float, s_per_sample: float, n_train_slices: int, n_val_slices: int,
                  val_pixels_ratio: float, batch: int, max_epochs: int) -> dict[str, tuple[int, str]]:
    """Epochs, training samples per epoch and validation slices for a time budget (module docstring)."""
    budget = budget_minutes * 60.0
    per_epoch = max(2 * batch, min(n_train_slices, int(budget / MIN_EPOCHS / s_per_sample)))
    train_s = per_epoch * s_per_sample
    val_slice_s = s_per_sample * VAL_COST * val_pixels_ratio
    n_val = max(1, min(n_val_slices, int(VAL_SHARE * train_s / max(val_slice_s, 1e-9))))
    epoch_s = train_s + n_val * val_slice_s
    epochs = int(max(1, min(max_epochs, budget // epoch_s)))
    why = (f"{budget_minutes:g} min budget / {epoch_s:.1f} s per epoch ({per_epoch} samples at {s_per_sample:.3f} s, "
           f"{n_val} validation slices), at most segmentation.epochs {max_epochs}")
    return {"segmentation.epochs": (epochs, why),
            "segmentation.max_train_slices_per_epoch": (per_epoch, f"all {n_train_slices} training slices, at most "
                                                        f"1/{MIN_EPOCHS} of the budget"),
            "segmentation.max_val_slices": (n_val, f"all {n_val_slices} validation slices, at most {VAL_SHARE:.0%} "
                                            "of an epoch's time")}


def probe_seconds_per_sample(cfg: Config, arch: str, in_channels: int, patch: int, device: str) -> float:
    """Measured seconds of one training sample at ``patch``: the fastest of three optimiser steps of the
    planned network (batch 2, after a warm-up step; deep supervision, loss and optimiser as planned;
    the fastest, because other work on a shared machine only ever slows a step) divided by 2, plus the
    augmentation of one patch."""
    import torch

    from .data import augment
    from .losses import SegLoss
    from .checkpoint import build_network
    from .optim import make_optimizer

    s = cfg.segmentation
    if s.num_threads:
        torch.set_num_threads(s.num_threads)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    net = build_network(cfg, arch, in_channels).to(device)
    opt = make_optimizer(net, s.optimizer, s.lr)
    loss_fn = SegLoss(s, pixel_area_mm2=1.0)
    x = torch.randn(2, in_channels, patch, patch, generator=gen).to(device)
    y = (torch.rand(2, patch, patch, generator=gen) > 0.9).float().to(device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    rng = np.random.default_rng(cfg.run.seed)
    img = rng.standard_normal((in_channels, patch, patch)).astype(np.float32)
    m = (rng.random((patch, patch)) > 0.9).astype(np.uint8)
    t0 = time.perf_counter()
    for _ in range(4):
        augment(img, m, rng, s.augmentation)
    return min(times[1:]) / 2 + (time.perf_counter() - t0) / 4
