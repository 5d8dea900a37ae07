"""Preprocess stage: resample, z-score, 2D axial slices at 256 x 256, and THE patient split.

Per patient, every sequence is resampled onto one reference grid: the first configured
sequence (T2W) at ``preprocess.spacing`` (B-spline for images, nearest neighbour for masks).
Each channel is z-scored (statistics over the whole volume or over the body, config), each
axial slice is centre-padded/cropped to ``slice_size`` squared. Slices are stored as
memory-mappable ``.npy`` files (float16 images ``(S, C, H, W)``, uint8 masks ``(S, H, W)``)
with one ``slices.csv`` index, and ``meta/<id>.json`` holds what is needed to map a
prediction back onto the original grid (:func:`restore_mask`).

``splits.json`` is written here, once, and every later stage reads it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .cohort import LABEL, load_splits, make_split, pathologic_typing, split_of
from .config import Config, PreprocessConfig
from .io import Cohort, Patient, read_image, to_array
from .rundir import Layout, RunDir, StageContext, atomic_path, write_json


# --------------------------------------------------------------------------- pure cores
def zscore(arr: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(arr - mean) / sd with statistics over ``mask`` (or the whole array)."""
    ref = arr[mask] if mask is not None and mask.any() else arr
    sd = float(ref.std())
    return ((arr - float(ref.mean())) / (sd if sd > 1e-8 else 1.0)).astype(np.float32)


def body_mask(arr: np.ndarray) -> np.ndarray:
    """Voxels above an Otsu threshold (the body, for MRI)."""
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    return sitk.GetArrayFromImage(sitk.OtsuThreshold(img, 0, 1)).astype(bool)


def pad_crop_offsets(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Offsets (dy, dx) placing a ``shape`` slice centred in a ``size`` square (negative = crop)."""
    return (size - shape[0]) // 2, (size - shape[1]) // 2


def to_square(vol: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
    """Centre-pad or crop the last two axes of ``vol`` to ``size`` x ``size``."""
    dy, dx = pad_crop_offsets(vol.shape[-2:], size)
    out = np.full(vol.shape[:-2] + (size, size), fill, dtype=vol.dtype)
    sy, sx = max(0, -dy), max(0, -dx)
    ty, tx = max(0, dy), max(0, dx)
    h = min(vol.shape[-2] - sy, size - ty)
    w = min(vol.shape[-1] - sx, size - tx)
    out[..., ty:ty + h, tx:tx + w] = vol[..., sy:sy + h, sx:sx + w]
    return out


def from_square(sq: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_square`: back to ``shape`` (cropped borders come back as 0)."""
    size = sq.shape[-1]
    dy, dx = pad_crop_offsets(shape, size)
    out = np.zeros(sq.shape[:-2] + tuple(shape), dtype=sq.dtype)
    sy, sx = max(0, dy), max(0, dx)
    ty, tx = max(0, -dy), max(0, -dx)
    h = min(size - sy, shape[0] - ty)
    w = min(size - sx, shape[1] - tx)
    out[..., ty:ty + h, tx:tx + w] = sq[..., sy:sy + h, sx:sx + w]
    return out


# --------------------------------------------------------------------------- grids
def reference_grid(img: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty image covering ``img``'s extent at ``spacing``."""
    new_size = [max(1, int(round(n * s / t))) for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing)]
    ref = sitk.Image(new_size, sitk.sitkFloat32)
    ref.SetSpacing(tuple(float(s) for s in spacing))
    ref.SetOrigin(img.GetOrigin())
    ref.SetDirection(img.GetDirection())
    return ref


def resample_to(img: sitk.Image, ref: sitk.Image, is_mask: bool = False) -> sitk.Image:
    """Resample ``img`` onto ``ref``'s grid (no-op copy when the grids already match)."""
    from .io import geometry_mismatch

    if geometry_mismatch(img, ref, 1e-6) is None:
        return sitk.Cast(img, sitk.sitkUInt8 if is_mask else sitk.sitkFloat32)
    interp = sitk.sitkNearestNeighbor if is_mask else sitk.sitkBSpline
    pixel = sitk.sitkUInt8 if is_mask else sitk.sitkFloat32
    return sitk.Resample(img, ref, sitk.Transform(), interp, 0.0, pixel)


@dataclass
class Prepared:
    """A volume ready for the network, and how to map predictions back."""

    image: np.ndarray  # (S, C, size, size) float32
    mask: np.ndarray | None  # (S, size, size) uint8
    meta: dict


def prepare_volume(images: list[sitk.Image], cfg: PreprocessConfig, mask: sitk.Image | None = None) -> Prepared:
    """Resample every sequence onto the first one's grid at ``cfg.spacing``, z-score, square slices."""
    ref = reference_grid(images[0], cfg.spacing)
    channels = []
    for img in images:
        arr = to_array(resample_to(sitk.Cast(img, sitk.sitkFloat32), ref))
        region = body_mask(arr) if cfg.normalize == "body" else None
        channels.append(zscore(arr, region))
    vol = np.stack(channels, axis=1)  # (S, C, Y, X)
    fill = [float(c.min()) for c in channels]
    sq = np.stack([to_square(vol[:, c], cfg.slice_size, fill[c]) for c in range(vol.shape[1])], axis=1)
    m_sq = None
    lost = 0
    if mask is not None:
        m = (to_array(resample_to(mask, ref, is_mask=True), np.uint8) > 0).astype(np.uint8)
        m_sq = to_square(m, cfg.slice_size)
        lost = int(m.sum()) - int(m_sq.sum())
    meta = {
        "original": {"size": list(images[0].GetSize()), "spacing": list(images[0].GetSpacing()),
                     "origin": list(images[0].GetOrigin()), "direction": list(images[0].GetDirection())},
        "resampled_size": list(ref.GetSize()),
        "spacing": list(cfg.spacing),
        "slice_size": cfg.slice_size,
        "lesion_voxels_cropped": lost,
        "channel_mean": [float(c.mean()) for c in channels],
        "channel_sd": [float(c.std()) for c in channels],
    }
    return Prepared(sq.astype(np.float32), m_sq, meta)


def restore_mask(pred: np.ndarray, meta: dict, reference: sitk.Image) -> sitk.Image:
    """Map a (S, size, size) binary prediction back onto ``reference``'s original grid."""
    rx, ry, rz = meta["resampled_size"]
    vol = from_square(pred.astype(np.uint8), (ry, rx))
    small = sitk.GetImageFromArray(vol)
    small.SetSpacing(tuple(meta["spacing"]))
    small.SetOrigin(reference.GetOrigin())
    small.SetDirection(reference.GetDirection())
    out = sitk.Resample(small, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return out


# --------------------------------------------------------------------------- the stage
def _process_patient(p: Patient, sequences: tuple[str, ...], cfg: PreprocessConfig, out: Layout) -> dict:
    imgs = [read_image(p.images[s], p.id, s) for s in sequences]
    mask = read_image(p.mask, p.id, "mask") if p.mask is not None else None
    prep = prepare_volume(imgs, cfg, mask)
    with atomic_path(out.slice_file(p.id, "image")) as tmp:
        np.save(tmp, prep.image.astype(np.float16))
    lesion_px = np.zeros(prep.image.shape[0], dtype=int)
    if prep.mask is not None:
        with atomic_path(out.slice_file(p.id, "mask")) as tmp:
            np.save(tmp, prep.mask)
        lesion_px = prep.mask.reshape(prep.mask.shape[0], -1).sum(axis=1)
    write_json(out.meta_file(p.id), prep.meta)
    stats = {"mean": prep.meta["channel_mean"][0], "sd": prep.meta["channel_sd"][0]}
    return {"id": p.id, "lesion_px": lesion_px.tolist(), "cropped": prep.meta["lesion_voxels_cropped"], **stats}


def split_for_cohort(cohort: Cohort, cfg: Config) -> dict:
    labels = None
    if cohort.clinical is not None and cfg.preprocess.split.stratify:
        y = pathologic_typing(cohort.clinical.drop_duplicates(cfg.data.id_column), cfg.data)
        labels = {pid: int(y[pid]) for pid in cohort.ids if pid in y.index}
        if len(labels) != len(cohort.ids):
            labels = None
    s = cfg.preprocess.split
    parts = make_split(cohort.ids, labels, (s.train, s.val, s.test), cfg.run.seed, stratify=labels is not None)
    return {**parts, "seed": cfg.run.seed, "stratified_by": LABEL if labels else None,
            "fractions": [s.train, s.val, s.test]}


def run(cfg: Config, run: RunDir, cohort: Cohort, st: StageContext) -> dict:
    """The preprocess stage: every patient of ``cohort`` into ``preprocess/``, and ``splits.json``."""
    from joblib import Parallel, delayed

    sequences = tuple(cfg.segmentation.input_sequences)
    out = Layout(st.staging)
    splits = split_for_cohort(cohort, cfg)
    results = Parallel(n_jobs=cfg.execution.workers)(
        delayed(_process_patient)(p, sequences, cfg.preprocess, out) for p in cohort.patients)
    summary = _write_index(results, split_of(splits), out, sequences, cfg.preprocess)
    write_json(st.splits, splits)
    st.info["summary"] = {k: summary[k] for k in ("slices_with_lesion", "slices_without_lesion")}
    return summary


def _write_index(results: list[dict], split: dict[str, str], out: Layout, sequences: tuple[str, ...],
                 cfg: PreprocessConfig) -> dict:
    rows = []
    for r in results:
        for i, n in enumerate(r["lesion_px"]):
            rows.append({"patient_id": r["id"], "split": split[r["id"]], "slice": i, "lesion_pixels": int(n),
                         "has_lesion": bool(n > 0)})
    df = pd.DataFrame(rows)
    from .io import write_table

    write_table(df, out.slices_index)
    per_split = {}
    for part in ("train", "val", "test"):
        d = df[df.split == part]
        per_split[part] = {"patients": int(d.patient_id.nunique()), "slices": int(len(d)),
                           "with_lesion": int(d.has_lesion.sum()), "without_lesion": int((~d.has_lesion).sum())}
    summary = {
        "channels": list(sequences),
        "spacing": list(cfg.spacing),
        "slice_size": cfg.slice_size,
        "normalize": cfg.normalize,
        "slices_with_lesion": int(df.has_lesion.sum()),
        "slices_without_lesion": int((~df.has_lesion).sum()),
        "per_split": per_split,
        "lesion_voxels_cropped": {r["id"]: r["cropped"] for r in results if r["cropped"]},
        "zscore_check": {"mean_of_means": float(np.mean([r["mean"] for r in results])),
                         "mean_of_sds": float(np.mean([r["sd"] for r in results]))},
    }
    write_json(out.preprocess_summary, summary)
    return summary


def load_patient_slices(run_path: Path, pid: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(image (S, C, H, W) float16, mask (S, H, W) uint8 or None) of one preprocessed patient."""
    run = Layout(run_path)
    mode = "r" if mmap else None
    img = np.load(run.slice_file(pid, "image"), mmap_mode=mode)
    mp = run.slice_file(pid, "mask")
    return img, (np.load(mp, mmap_mode=mode) if mp.is_file() else None)


def load_meta(run_path: Path, pid: str) -> dict:
    return json.loads(Layout(run_path).meta_file(pid).read_text(encoding="utf-8"))


__all__ = ["zscore", "body_mask", "to_square", "from_square", "prepare_volume", "restore_mask", "run",
           "load_patient_slices", "load_meta", "load_splits"]
