"""Training data from the preprocess artifacts, slice sampling and on-the-fly augmentation.

Slices come from ``<run>/preprocess/slices/<pid>_{image,mask}.npy`` (memory-mapped) and the
index ``<run>/preprocess/slices.csv``; the patients of each part are exactly those of
``splits.json`` (patient level, never slice level).

Sampling per epoch (:func:`epoch_slices`): every training slice with a lesion plus lesion-free
slices so that they make up ``lesion_free_fraction`` of the epoch, i.e.
``n_free = round(f / (1 - f) · n_lesion)``; then, if ``max_train_slices_per_epoch`` is set, a
random subset of that size keeping the same share. Seeded by (run seed, epoch).

nnU-Net's foreground oversampling (:func:`oversampled_epoch`, when
``segmentation.foreground_oversampling`` = p is set): an epoch is ``max_train_slices_per_epoch``
samples (else as many as there are training slices) in batches of ``batch_size``; in every batch
the last ``B - round(B · (1 - p))`` samples are FORCED: a random lesion slice whose patch is
placed around a random lesion pixel (so it contains lesion); the others are random slices of the
training set cut at a random place (lesion or not). p = 0.33 and B = 8 force 3 of 8.

Augmentation (:func:`augment`, SPEC §2): one affine transform per slice, rotation uniform in
±``rotation_deg`` about the slice centre, isotropic scale uniform in [scale_min, scale_max],
horizontal / vertical flips each with probability 1/2; applied with OpenCV to every image
channel (bilinear, border = the channel's minimum, i.e. background) and to the mask (nearest
neighbour, border 0) with the SAME matrix, then additive Gaussian noise (sd ``noise_sd``) on
the image only.

Training patches: slices are stored whole (any field of view), so every training slice is cut to
a square patch of side ``segmentation.train_crop`` (or ``preprocess.slice_size`` when null),
after padding a smaller slice with background. The window is placed at random so that, for a
lesion slice, it contains a random lesion pixel (with a margin of a quarter patch where the
slice allows); lesion-free slices are cut anywhere. Validation and inference use whole slices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..splits import load_splits
from ..config.schema import AugmentationConfig, SegmentationConfig
from ..errors import InputError
from ..preprocess import load_patient_slices
from ..layout import Layout
from .augment import EXTRA, extra_augment
from .context import input_channels, stack_context


@dataclass
class SliceSet:
    """The slices of one split part: (patient id, slice index, has lesion) rows and their arrays."""

    run_path: Path
    rows: pd.DataFrame  # patient_id, slice, has_lesion, lesion_pixels
    images: dict  # pid -> (S, C, H, W) float16 memmap
    masks: dict  # pid -> (S, H, W) uint8 memmap
    context: int = 0  # neighbouring slices per side stacked as channels (segmentation.context_slices)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (C · (2k + 1), H, W) float32, mask (H, W) uint8) of row ``i`` (:mod:`.context`)."""
        r = self.rows.iloc[i]
        return (stack_context(self.images[r.patient_id], [r.slice], self.context)[0],
                np.asarray(self.masks[r.patient_id][r.slice], dtype=np.uint8))

    def with_context(self, k: int) -> "SliceSet":
        """The same slices with ``k`` context slices per side."""
        return replace(self, context=int(k))

    @property
    def patients(self) -> list[str]:
        return list(self.images)

    @property
    def n_channels(self) -> int:
        """Sequences per slice as stored (without context)."""
        return next(iter(self.images.values())).shape[1]

    @property
    def in_channels(self) -> int:
        """Channels of a network input: sequences x (2 · context + 1)."""
        return input_channels(self.n_channels, self.context)


def load_slice_set(run_path: Path, part: str, masks: bool = True) -> SliceSet:
    """The slices of ``part`` ('train' | 'val' | 'test') as listed by splits.json and slices.csv
    (``masks=False``: images only, no mask file opened, e.g. for the label-free warm start)."""
    run_path = Path(run_path)
    ids = load_splits(run_path)[part]
    index_path = Layout(run_path).slices_index
    if not index_path.is_file():
        raise InputError(f"Run directory '{run_path}' has no preprocess/slices.csv; run `cervirad preprocess` first.")
    df = pd.read_csv(index_path, dtype={"patient_id": str})
    rows = df[df.patient_id.isin(ids)].sort_values(["patient_id", "slice"]).reset_index(drop=True)
    missing = sorted(set(ids) - set(rows.patient_id))
    if missing:
        raise InputError(f"Split part '{part}' lists patient '{missing[0]}' that preprocess/slices.csv lacks; "
                         "rerun `cervirad preprocess` for this run.")
    images, masks_ = {}, {}
    for pid in ids:
        if not masks:
            images[pid] = np.load(Layout(run_path).slice_file(pid, "image"), mmap_mode="r")
            continue
        img, m = load_patient_slices(run_path, pid)
        if m is None:
            raise InputError(f"Patient '{pid}' of split part '{part}' has no lesion mask in the preprocess output; "
                             "segmentation training and evaluation need a mask for every patient.")
        images[pid], masks_[pid] = img, m
    return SliceSet(run_path, rows, images, masks_)


def epoch_slices(rows: pd.DataFrame, cfg: SegmentationConfig, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one training epoch (shuffled); see the module docstring for the rule."""
    lesion = np.flatnonzero(rows.has_lesion.to_numpy())
    if len(lesion) == 0:
        raise InputError("The training split has no slice with a lesion (every training mask is empty); check the "
                         "masks or the split: segmentation cannot learn without lesion slices.")
    return rng.permutation(_mix(rows, cfg.lesion_free_fraction, cfg.max_train_slices_per_epoch, rng))


def oversampled_epoch(rows: pd.DataFrame, cfg: SegmentationConfig,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, forced) of one epoch with foreground oversampling (module docstring); the
    order is kept as drawn because a sample's place in its batch decides whether it is forced."""
    lesion = np.flatnonzero(rows.has_lesion.to_numpy())
    if len(lesion) == 0:
        raise InputError("The training split has no slice with a lesion (every training mask is empty); check the "
                         "masks or the split: segmentation cannot learn without lesion slices.")
    n = cfg.max_train_slices_per_epoch or len(rows)
    bs = cfg.batch_size
    forced = (np.arange(n) % bs) >= round(bs * (1.0 - cfg.foreground_oversampling))
    idx = np.empty(n, dtype=int)
    idx[forced] = rng.choice(lesion, int(forced.sum()), replace=True)
    idx[~forced] = rng.integers(0, len(rows), int((~forced).sum()))
    return idx, forced


def val_slices(rows: pd.DataFrame, cfg: SegmentationConfig, seed: int) -> np.ndarray:
    """Row indices scored for early stopping: all, or a fixed seeded subset of ``max_val_slices``
    (lesion slices and lesion-free slices in the training share)."""
    if cfg.max_val_slices is None or len(rows) <= cfg.max_val_slices:
        return np.arange(len(rows))
    return np.sort(_mix(rows, cfg.lesion_free_fraction, cfg.max_val_slices, np.random.default_rng(seed)))


def _mix(rows: pd.DataFrame, free_fraction: float, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """All lesion slices plus ``round(f/(1-f)·n_lesion)`` lesion-free ones, then at most ``cap`` (same share)."""
    has = rows.has_lesion.to_numpy().astype(bool)
    lesion, free = np.flatnonzero(has), np.flatnonzero(~has)
    f = free_fraction
    n_free = len(free) if f >= 1 else min(len(free), int(round(f / (1.0 - f) * len(lesion))))
    free = rng.choice(free, n_free, replace=False)
    if cap is not None and len(lesion) + len(free) > cap:
        n_l = min(len(lesion), int(round(cap * len(lesion) / (len(lesion) + len(free)))))
        lesion, free = rng.choice(lesion, n_l, replace=False), rng.choice(free, cap - n_l, replace=False)
    return np.concatenate([lesion, free]).astype(int)


def affine_matrix(size: tuple[int, int], angle_deg: float, scale: float, flip_h: bool, flip_v: bool) -> np.ndarray:
    """2 x 3 matrix: flips, then rotation by ``angle_deg`` and scaling by ``scale`` about the centre."""
    h, w = size
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, scale)
    flip = np.array([[-1.0 if flip_h else 1.0, 0, (w - 1) if flip_h else 0],
                     [0, -1.0 if flip_v else 1.0, (h - 1) if flip_v else 0], [0, 0, 1]])
    return (np.vstack([m, [0, 0, 1]]) @ flip)[:2]


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            cfg: AugmentationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Random flips/rotation/scale (same matrix for image and mask), Gaussian noise on the image, then
    nnU-Net's elastic/blur/brightness/contrast/low-resolution/gamma transforms (:mod:`.augment`), each
    with its configured probability."""
    h, w = mask.shape
    m = affine_matrix((h, w), rng.uniform(-cfg.rotation_deg, cfg.rotation_deg),
                      rng.uniform(cfg.scale_min, cfg.scale_max),
                      cfg.flip_horizontal and rng.random() < 0.5, cfg.flip_vertical and rng.random() < 0.5)
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        out[c] = cv2.warpAffine(image[c], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=float(image[c].min()))
    m_out = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if cfg.noise_sd > 0:
        out += rng.normal(0.0, cfg.noise_sd, out.shape).astype(out.dtype)
    return extra_augment(out, m_out, rng, {name: getattr(cfg, f"{name}_p") for name in EXTRA})


def random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
                around_lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` square window (the slice must be at least that large); on lesion slices it contains
    a random lesion pixel unless ``around_lesion`` is False (then it is placed anywhere)."""
    h, w = mask.shape
    if size >= h and size >= w:
        return image, mask
    ys, xs = np.nonzero(mask) if around_lesion else ((), ())
    if len(ys):
        k = rng.integers(len(ys))
        margin = size // 4
        y0 = int(np.clip(ys[k] - rng.integers(margin, size - margin), 0, h - size))
        x0 = int(np.clip(xs[k] - rng.integers(margin, size - margin), 0, w - size))
    else:
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[:, y0:y0 + size, x0:x0 + size], mask[y0:y0 + size, x0:x0 + size]


def pad_to(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a slice smaller than ``size`` (either side) at its end: image with each channel's minimum
    (background), mask with 0."""
    h, w = mask.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return image, mask
    fill = image.reshape(image.shape[0], -1).min(axis=1)
    out = np.empty((image.shape[0], h + ph, w + pw), dtype=image.dtype)
    out[:] = fill[:, None, None]
    out[:, :h, :w] = image
    return out, np.pad(mask, ((0, ph), (0, pw)))


def training_batches(data: SliceSet, order: np.ndarray, cfg: SegmentationConfig, rng: np.random.Generator,
                     patch: int, forced: np.ndarray | None = None):
    """Yield (images (B, C, patch, patch) float32, masks (B, patch, patch) float32) batches in ``order``:
    every slice (stored whole) padded to at least ``patch`` and cut to a ``patch`` square window that,
    on lesion slices, contains a lesion pixel. With ``forced`` (foreground oversampling) only the
    forced samples are cut around lesion; the others anywhere."""
    bs = cfg.batch_size
    for start in range(0, len(order), bs):
        imgs, msks = [], []
        for j, i in enumerate(order[start:start + bs], start):
            img, m = pad_to(*data.get(int(i)), patch)
            img, m = random_crop(img, m, patch, rng, around_lesion=True if forced is None else bool(forced[j]))
            img, m = augment(np.ascontiguousarray(img), np.ascontiguousarray(m), rng, cfg.augmentation)
            imgs.append(img)
            msks.append(m)
        yield np.stack(imgs), np.stack(msks).astype(np.float32)


def same_shape_batches(data: SliceSet, idx: np.ndarray, batch_size: int):
    """``idx`` in order, cut into batches of at most ``batch_size`` rows whose slices share one shape."""
    batch: list[int] = []
    shape = None
    for i in idx:
        r = data.rows.iloc[int(i)]
        s = data.images[r.patient_id].shape[2:]
        if batch and (s != shape or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(int(i))
        shape = s
    if batch:
        yield batch


def n_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
