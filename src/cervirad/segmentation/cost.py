"""Affordable inference: keep test-time mirroring and the fold ensemble only where they are worth
their cost (issue 25 item 8). Decided once after training, on the validation patients, and stored
in ``model.pt`` (``inference``), which :func:`.infer.load_model` follows.

Each option multiplies the inference time: mirroring by about 4 (four flips), a K-fold ensemble
by K. The rule (:func:`worth_it`): an option that multiplies the time by ``c`` is kept when it
raises the mean validation Dice by at least ``DICE_PER_DOUBLING`` x log2(c) — one Dice point per
doubling of the time (mirroring, x4: 2 points).

- Mirroring: each validation patient is predicted with and without mirroring in ONE pass (the
  plain prediction is the identity flip's, :func:`.tta.plain_and_mirrored`), by the model that
  did not train on it (fold ensembles: its own fold's member; the pooled out-of-fold predictions).
  The cost ratio is measured on the first patient (a plain pass against the mirrored pass).
- The ensemble: no validation patient is unseen by every member (each trained K - 1 of them), so
  the ensemble's gain cannot be measured on them without leakage, and the test patients must not
  decide anything. It is therefore kept when it is affordable: when its measured time for a
  ``REFERENCE_SLICES``-slice volume (K x a member's, with the mirroring kept) is within
  ``segmentation.max_seconds_per_volume`` (default ``TARGET_SECONDS`` = 30; null = always kept);
  otherwise the member with the highest validation Dice on its held-out patients is kept alone.

With mirroring off in the config and one model there is nothing to decide (nothing is stored).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DICE_PER_DOUBLING = 0.01  # Dice an option must add per doubling of the inference time
TARGET_SECONDS, REFERENCE_SLICES = 30.0, 60  # the ensemble must segment a 60-slice volume within 30 s


def worth_it(dice_gain: float, cost_ratio: float) -> bool:
    """The module's rule: keep an option multiplying the time by ``cost_ratio`` iff it adds at least
    ``DICE_PER_DOUBLING`` x log2(cost_ratio) mean Dice."""
    return bool(dice_gain >= DICE_PER_DOUBLING * math.log2(max(cost_ratio, 1.0)))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    den = int(pred.sum()) + int(truth.sum())
    return 1.0 if den == 0 else 2.0 * int((pred & truth).sum()) / den


def measure(cfg, run, parts: list[tuple[Path, list[str]]]) -> dict:
    """Mean validation Dice without and with mirroring (each patient by its ``parts`` model) and the
    seconds per slice of one member, plain and mirrored."""
    from ..preprocess import load_patient_slices
    from .infer import load_model, predict_slices

    s = cfg.segmentation
    plain, mirror, n_slices, t_mirror, t_plain = [], [], 0, 0.0, None
    for model_path, val_ids in parts:
        model = load_model(model_path, s.device, tta_mirror=False, sliding_window=s.sliding_window)
        for pid in val_ids:
            images, truth = load_patient_slices(run.path, pid)
            if t_plain is None:  # the cost of a plain pass, on the first patient
                t0 = time.perf_counter()
                predict_slices(model, images, s.infer_batch_size)
                t_plain = (time.perf_counter() - t0) / max(1, len(images))
            t0 = time.perf_counter()
            probs, _ = predict_slices(model, images, s.infer_batch_size, both=True)
            t_mirror += time.perf_counter() - t0
            n_slices += len(images)
            plain.append(_dice(probs[0] > s.threshold, truth > 0))
            mirror.append(_dice(probs[1] > s.threshold, truth > 0))
    per_slice = t_mirror / max(1, n_slices)
    return {"val_dice_plain": float(np.mean(plain)), "val_dice_mirrored": float(np.mean(mirror)),
            "n_val_patients": len(plain), "seconds_per_slice_plain": t_plain or float("nan"),
            "seconds_per_slice_mirrored": per_slice}


def decide(measured: dict, n_members: int, member_val_dice: list[float] | None = None,
           mirror_allowed: bool = True, target_seconds: float | None = TARGET_SECONDS) -> dict:
    """The stored ``inference`` decision from :func:`measure`'s numbers (module docstring's rule)."""
    ratio = measured["seconds_per_slice_mirrored"] / max(measured["seconds_per_slice_plain"], 1e-9)
    gain = measured["val_dice_mirrored"] - measured["val_dice_plain"]
    mirror = mirror_allowed and worth_it(gain, ratio)
    member_s = measured["seconds_per_slice_mirrored" if mirror else "seconds_per_slice_plain"] * REFERENCE_SLICES
    out = {"rule": f"an option multiplying the time by c is kept iff it adds >= {DICE_PER_DOUBLING} x log2(c) mean "
                   f"validation Dice; the ensemble (gain not measurable without leakage) iff a {REFERENCE_SLICES}-slice "
                   f"volume takes <= {target_seconds} s (segmentation.max_seconds_per_volume)",
           "tta_mirror": bool(mirror), "mirror_dice_gain": gain, "mirror_cost_ratio": ratio,
           "mirror_needed_gain": DICE_PER_DOUBLING * math.log2(max(ratio, 1.0)), **measured}
    if n_members >= 2:
        ensemble_s = n_members * member_s
        keep_all = target_seconds is None or ensemble_s <= target_seconds
        best = int(np.nanargmax(member_val_dice)) if member_val_dice else 0
        out.update(ensemble_seconds_per_volume=ensemble_s, members=list(range(n_members)) if keep_all else [best])
        member_s = ensemble_s if keep_all else member_s
    out["seconds_per_volume"] = member_s
    return out


def choose_inference(cfg, run, model_path: Path, parts: list[tuple[Path, list[str]]],
                     member_val_dice: list[float] | None = None) -> dict:
    """Measure and decide (module docstring) and store the decision in ``model_path``'s ``inference``;
    returns it ({} when there is nothing to decide)."""
    from .checkpoint import read_checkpoint, save_checkpoint

    s = cfg.segmentation
    n_members = len(parts) if len(parts) >= 2 else 1
    if not s.tta_mirror and n_members == 1:
        return {}
    t0 = time.perf_counter()
    out = decide(measure(cfg, run, parts), n_members, member_val_dice, mirror_allowed=s.tta_mirror,
                 target_seconds=s.max_seconds_per_volume)
    ck = read_checkpoint(model_path)
    ck["inference"] = out
    save_checkpoint(ck, model_path)
    log.info("train-seg: inference mirroring %s (validation Dice %.4f plain, %.4f mirrored, %.1fx the time)%s; "
             "%.1f s per %d-slice volume (decided in %.0f s)", "kept" if out["tta_mirror"] else "off",
             out["val_dice_plain"], out["val_dice_mirrored"], out["mirror_cost_ratio"],
             f", ensemble members kept: {out['members']}" if "members" in out else "", out["seconds_per_volume"],
             REFERENCE_SLICES, time.perf_counter() - t0)
    return out


__all__ = ["worth_it", "measure", "decide", "choose_inference", "DICE_PER_DOUBLING", "TARGET_SECONDS"]
