"""Test-time augmentation for slice inference (nnU-Net's, Isensee et al. 2021): mirroring and a
Gaussian-weighted sliding window. Pure tensor functions around a ``proba`` callable that maps a
batch ``(B, C, H, W)`` to probabilities ``(B, H, W)`` (one network, or the mean of a fold ensemble).

Mirroring (:func:`mirrored`): the batch is predicted as it is and flipped horizontally,
vertically and both ways; each prediction is flipped back and the four are averaged.

Sliding window (:func:`sliding_window`): when a slice is larger than the patch the network was
trained on, it is predicted in windows of the patch size whose starts are spaced at most
``step`` x patch apart (nnU-Net's rule: ``n = ceil((L - p) / (step · p)) + 1`` windows per axis,
spread evenly from 0 to ``L - p``). Each window's probabilities are weighted by a Gaussian
importance map (sigma = ``sigma_scale`` x patch per axis, maximum 1, zeros raised to the smallest
positive value) so the centre of a window, which saw the most context, counts most; the sum of
weighted probabilities is divided by the sum of weights at every pixel. Along an axis shorter
than the patch the window is the whole axis (the network is fully convolutional).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Proba = Callable[[torch.Tensor], torch.Tensor]
MIRRORS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # identity, horizontal, vertical, both
SIGMA_SCALE = 1.0 / 8
STEP = 0.5


def mirrored(proba: Proba, x: torch.Tensor) -> torch.Tensor:
    """Mean over :data:`MIRRORS` of ``flip_back(proba(flip(x)))`` for a batch (B, C, H, W); the
    flipped copies go through the network as one batch (4B slices)."""
    return plain_and_mirrored(proba, x)[x.shape[0]:]


def plain_and_mirrored(proba: Proba, x: torch.Tensor) -> torch.Tensor:
    """(2B, H, W): the plain prediction (the identity flip's, first B) and the mirrored mean (last B)
    from ONE pass over the flipped copies, so measuring what mirroring adds costs nothing extra."""
    b = x.shape[0]
    flips = torch.cat([torch.flip(x, dims) if dims else x for dims in MIRRORS])
    p = proba(flips.contiguous(memory_format=torch.channels_last))
    back = [torch.flip(p[i * b:(i + 1) * b], dims) if dims else p[:b] for i, dims in enumerate(MIRRORS)]
    return torch.cat([back[0], torch.stack(back).mean(0)])  # flips act on the same last two axes


def gaussian_importance(size: tuple[int, int], sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """(h, w) Gaussian centred on the window, sigma = sigma_scale x side, maximum 1, no zeros."""
    axes = []
    for n in size:
        c = (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-6)
        axes.append(torch.exp(-0.5 * ((torch.arange(n, dtype=torch.float64) - c) / sigma) ** 2))
    g = torch.outer(axes[0], axes[1])
    g = g / g.max()
    positive = g[g > 0]
    g[g == 0] = positive.min()
    return g.float()


def window_starts(length: int, patch: int, step: float = STEP) -> list[int]:
    """Start offsets of the windows along one axis (nnU-Net's ``compute_steps_for_sliding_window``)."""
    if length <= patch:
        return [0]
    n = math.ceil((length - patch) / (step * patch)) + 1
    stride = (length - patch) / (n - 1)
    return [int(round(stride * i)) for i in range(n)]


def window_weights(shape: tuple[int, int], patch: int, step: float = STEP,
                   sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """The summed importance weights every pixel of a slice of ``shape`` receives (the divisor)."""
    ph, pw = min(patch, shape[0]), min(patch, shape[1])
    g = gaussian_importance((ph, pw), sigma_scale)
    total = torch.zeros(shape)
    for y in window_starts(shape[0], ph, step):
        for x in window_starts(shape[1], pw, step):
            total[y:y + ph, x:x + pw] += g
    return total


def sliding_window(proba: Proba, x: torch.Tensor, patch: int, step: float = STEP,
                   sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """Probabilities (B, H, W) of a batch (B, C, H, W) from Gaussian-weighted windows of side ``patch``."""
    h, w = x.shape[-2:]
    ph, pw = min(patch, h), min(patch, w)
    g = gaussian_importance((ph, pw), sigma_scale).to(x.device)
    acc = None  # (N, H, W): N = B, or a multiple of it for a ``proba`` returning several maps per slice
    norm = torch.zeros((h, w), dtype=torch.float32, device=x.device)
    for y0 in window_starts(h, ph, step):
        for x0 in window_starts(w, pw, step):
            p = proba(x[..., y0:y0 + ph, x0:x0 + pw].contiguous(memory_format=torch.channels_last))
            if acc is None:
                acc = torch.zeros((p.shape[0], h, w), dtype=torch.float32, device=x.device)
            acc[:, y0:y0 + ph, x0:x0 + pw] += p.float() * g
            norm[y0:y0 + ph, x0:x0 + pw] += g
    return acc / norm


def needs_window(shape: tuple[int, ...], patch: int | None) -> bool:
    """Whether a slice of ``shape`` (..., H, W) exceeds the training patch along either axis."""
    return patch is not None and (shape[-2] > patch or shape[-1] > patch)


def predict(proba: Proba, x: torch.Tensor, mirror: bool = False, patch: int | None = None,
            both: bool = False) -> torch.Tensor:
    """Probabilities (B, H, W) with mirroring when ``mirror`` and windows of ``patch`` when the slice
    exceeds it (``patch`` None = whole slices). Mirroring is applied per window, as nnU-Net does.
    ``both``: (2B, H, W), the plain then the mirrored prediction from one pass (:func:`plain_and_mirrored`)."""
    one = (lambda t: plain_and_mirrored(proba, t)) if both else (lambda t: mirrored(proba, t)) if mirror else proba
    return sliding_window(one, x, patch) if needs_window(x.shape, patch) else one(x)


__all__ = ["MIRRORS", "mirrored", "plain_and_mirrored", "gaussian_importance", "window_starts", "window_weights",
           "sliding_window", "needs_window", "predict"]
