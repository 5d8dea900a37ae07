"""Segmentation loss (SPEC §4, paper Eq. 5-7).

With logits z, probabilities p = σ(z) and the reference mask t (all pixels of a batch):

- soft Dice loss   L_dice = 1 − (2 Σ p·t + ε) / (Σ p + Σ t + ε),  ε = 1 (a perfect p = t gives 0;
  an empty reference with an empty prediction also gives 0);
- binary cross-entropy  L_bce = −mean[t·log p + (1 − t)·log(1 − p)] (computed from z, stable);
- base loss  L_seg(z, t) = w_dice · L_dice + w_bce · L_bce   (``dice_weight``, ``bce_weight``).

Deep supervision (``deep_supervision``): with the K auxiliary decoder outputs z_k,
    L = L_seg(z, t) + λ_ds · (1/K) Σ_k L_seg(z_k, t)          (λ_ds = ``deep_supervision_weight``)

Lesion-size prior (``size_prior.enabled``): per slice s, the predicted area
A_s = a_px · Σ p (mm², a_px = pixel area from the preprocess spacing) gives the equivalent
diameter d_s = 2·sqrt(A_s / π). With the clinical range [d_min, d_max] = [10, 40] mm:
    P_s = relu(d_s − d_max) / d_max                 (always: no cross-section of a lesion
                                                      ≤ 4 cm can exceed 4 cm)
        + relu(d_min − d_s) / d_min · [d(t_s) ≥ d_min] (only where the reference cross-section is
                                                      itself ≥ 1 cm: the end slices of a lesion
                                                      legitimately show smaller sections)
    L += λ_size · mean_s P_s                         (λ_size = ``size_prior.weight``)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config.schema import SegmentationConfig

EPS = 1.0


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """1 − (2 Σ p·t + ε) / (Σ p + Σ t + ε) over the whole batch."""
    p, t = probs.float().flatten(), target.float().flatten()
    return 1.0 - (2.0 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                      bce_weight: float = 1.0) -> torch.Tensor:
    """w_dice · soft Dice + w_bce · BCE, from logits (B, 1, H, W) and a target (B, H, W)."""
    z = logits.float()[:, 0]
    return (dice_weight * soft_dice_loss(torch.sigmoid(z), target)
            + bce_weight * F.binary_cross_entropy_with_logits(z, target.float()))


def equivalent_diameter(area_mm2: torch.Tensor) -> torch.Tensor:
    """Diameter (mm) of the circle with the given area: 2·sqrt(A/π)."""
    return 2.0 * torch.sqrt(area_mm2.clamp_min(0.0) / math.pi + 1e-6)


def size_prior_penalty(probs: torch.Tensor, target: torch.Tensor, pixel_area_mm2: float,
                       d_min: float = 10.0, d_max: float = 40.0) -> torch.Tensor:
    """Mean over slices of the size-prior penalty P_s (module docstring)."""
    d_pred = equivalent_diameter(probs.float().flatten(1).sum(1) * pixel_area_mm2)
    d_true = equivalent_diameter(target.float().flatten(1).sum(1) * pixel_area_mm2)
    over = F.relu(d_pred - d_max) / d_max
    under = F.relu(d_min - d_pred) / d_min * (d_true >= d_min).float()
    return (over + under).mean()


class SegLoss:
    """The full training loss for one config (see module docstring)."""

    def __init__(self, cfg: SegmentationConfig, pixel_area_mm2: float):
        self.cfg = cfg
        self.pixel_area_mm2 = pixel_area_mm2

    def __call__(self, output, target: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        main, aux = (output if isinstance(output, tuple) else (output, []))
        loss = segmentation_loss(main, target, c.dice_weight, c.bce_weight)
        if aux:
            loss = loss + c.deep_supervision_weight * sum(
                segmentation_loss(a, target, c.dice_weight, c.bce_weight) for a in aux) / len(aux)
        if c.size_prior.enabled:
            sp = c.size_prior
            loss = loss + sp.weight * size_prior_penalty(torch.sigmoid(main.float()[:, 0]), target,
                                                         self.pixel_area_mm2, sp.min_diameter_mm, sp.max_diameter_mm)
        return loss
