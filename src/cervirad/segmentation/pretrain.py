"""Self-supervised warm start (issue 25): masked-patch inpainting on the training patients' slices.

Before supervised training, the segmentation network itself learns to restore slices of which
random square patches were blanked — the "in-painting" task of Models Genesis (Zhou et al.,
Medical Image Analysis 67:101840, 2021; Pathak et al., CVPR 2016), with the patch masking of
masked image modelling (SimMIM, Xie et al., CVPR 2022): a share ``MASK_RATIO`` of the patch is
covered by squares of side patch/``BLOCK_DIV``, set to 0 (the z-scored mean) in every input
channel; the network's output is regressed onto the uncorrupted centre slice of the first
sequence, with the loss (mean squared error) on the masked pixels plus ``VISIBLE_WEIGHT`` times
the visible ones. Every weight of the network is then the supervised training's starting point
(Models Genesis fine-tunes the whole encoder-decoder).

Only images are read, and only those of the patients passed in (the training patients of the
split, or of the ensemble's train+val pool; never a test patient); no mask is opened. The
schedule is a wall-clock budget (``segmentation.pretrain_minutes``, part of the stage's
``budget_minutes``): Adam (lr ``LR``), batches of ``segmentation.batch_size`` random patches of
``segmentation.train_crop``, seeded by (run seed, step).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from .context import stack_context

log = logging.getLogger(__name__)

MASK_RATIO = 0.35
BLOCK_DIV = 8
VISIBLE_WEIGHT = 0.1
LR = 1e-3
LOG_EVERY_S = 30.0


def mask_patches(shape: tuple[int, int], rng: np.random.Generator, ratio: float = MASK_RATIO,
                 block_div: int = BLOCK_DIV) -> np.ndarray:
    """Boolean (H, W): random squares of side ~side/block_div covering about ``ratio`` of the image."""
    h, w = shape
    b = max(2, min(h, w) // block_div)
    gh, gw = -(-h // b), -(-w // b)
    chosen = rng.random((gh, gw)) < ratio
    return np.kron(chosen, np.ones((b, b), dtype=bool))[:h, :w]


def sample_batch(images: dict, rows: list[tuple[str, int]], rng: np.random.Generator, batch: int, patch: int,
                 context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corrupted inputs (B, C', p, p), targets (B, p, p), masked (B, p, p)) from random slices."""
    xs, ys, ms = [], [], []
    for i in rng.integers(0, len(rows), batch):
        pid, sl = rows[int(i)]
        img = stack_context(images[pid], [sl], context)[0]
        c, h, w = img.shape
        ph, pw = max(0, patch - h), max(0, patch - w)
        if ph or pw:
            img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="edge")
            h, w = img.shape[1:]
        y0, x0 = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        img = img[:, y0:y0 + patch, x0:x0 + patch]
        m = mask_patches((patch, patch), rng)
        xs.append(np.where(m[None], 0.0, img).astype(np.float32))
        ys.append(img[context].astype(np.float32))  # first sequence, centre slice
        ms.append(m)
    return np.stack(xs), np.stack(ys), np.stack(ms)


def inpainting_loss(out: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """MSE on the masked pixels + VISIBLE_WEIGHT x MSE on the visible ones."""
    err = (out - target) ** 2
    m = masked.float()
    hidden = (err * m).sum() / m.sum().clamp(min=1.0)
    seen = (err * (1 - m)).sum() / (1 - m).sum().clamp(min=1.0)
    return hidden + VISIBLE_WEIGHT * seen


def pretrain(net: torch.nn.Module, images: dict, minutes: float, patch: int, batch: int, context: int,
             seed: int, device: torch.device) -> dict:
    """Inpainting warm start of ``net`` for ``minutes`` on ``images`` (pid -> (S, C, H, W) slices of the
    training patients only). Returns what it did (steps, seconds, first/last loss, patients)."""
    rows = [(pid, s) for pid, v in images.items() for s in range(v.shape[0])]
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    t0 = last_log = time.perf_counter()
    losses, step = [], 0
    while time.perf_counter() - t0 < minutes * 60.0:
        rng = np.random.default_rng([seed, step])
        x, y, m = (torch.from_numpy(a).to(device) for a in sample_batch(images, rows, rng, batch, patch, context))
        out = net(x)
        out = out[0] if isinstance(out, tuple) else out  # deep supervision: the main output
        loss = inpainting_loss(out[:, 0], y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if time.perf_counter() - last_log >= LOG_EVERY_S:
            last_log = time.perf_counter()
            log.info("warm start: step %d, inpainting loss %.4f, %.0f of %.0f s", step, np.mean(losses[-20:]),
                     last_log - t0, minutes * 60.0)
    first = float(np.mean(losses[:10])) if losses else float("nan")
    last = float(np.mean(losses[-10:])) if losses else float("nan")
    log.info("warm start: %d steps in %.0f s on %d patients, inpainting loss %.4f -> %.4f", step,
             time.perf_counter() - t0, len(images), first, last)
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "loss_first": first, "loss_last": last,
            "patients": sorted(images), "task": "masked-patch inpainting (Models Genesis / SimMIM)"}


def warm_start(job, pools: dict | None = None) -> Path | None:
    """The warm-start weights of a TrainJob's network (``<work>/../pretrain_<arch>.pt``), pretrained once per
    network and stage on the job's training patients (train, or the ensemble's train+val pool: never a test
    patient) and reused when present with the same key. None when ``pretrain_minutes`` is 0."""
    from .data import load_slice_set
    from .infer import resolve_device
    from .checkpoint import build_network, read_checkpoint_any, save_checkpoint

    s = job.cfg.segmentation
    if not s.pretrain_minutes:
        return None
    path = Path(job.pretrain_path)
    if path.is_file():
        ck = read_checkpoint_any(path)
        if ck.get("key") == job.key:
            return path
    parts = ("train",) if job.train_ids is None else ("train", "val")
    images = {}
    for part in parts:
        images.update(load_slice_set(job.run_path, part, masks=False).images)
    if job.train_ids is not None:  # a fold ensemble: the pool of its development patients
        allowed = set(job.train_ids) | set(job.val_ids or ())
        images = {p: v for p, v in images.items() if p in allowed}
    n_seq = next(iter(images.values())).shape[1]
    in_ch = n_seq * (2 * s.context_slices + 1)
    device = resolve_device(s.device)
    torch.manual_seed(job.cfg.run.seed)
    net = build_network(job.cfg, job.arch, in_ch).to(device)
    info = pretrain(net, images, s.pretrain_minutes, s.train_crop or job.cfg.preprocess.slice_size, s.batch_size,
                    s.context_slices, job.cfg.run.seed, device)
    save_checkpoint({"key": job.key, "arch": job.arch, "in_channels": in_ch, "info": info,
                     "state_dict": net.state_dict()}, path)
    return path


__all__ = ["mask_patches", "sample_batch", "inpainting_loss", "pretrain", "warm_start"]
