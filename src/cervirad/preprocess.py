"""Preprocess stage: one canonical orientation, resampling, z-score, whole 2D slices, THE split.

Per patient, every sequence is brought to the LPS orientation (:func:`canonical`, an exact
reordering of voxels) and resampled (B-spline) onto ONE canonical grid: identity direction,
covering the first sequence's whole physical extent at ``preprocess.spacing`` (in-plane column,
in-plane row, slice thickness). Oblique acquisitions are resampled onto that axis-aligned grid.
Slices are cut along the patient's ``preprocess.slice_axis`` (axial by default) and kept whole:
no field of view is cropped, so no lesion voxel is lost (training samples patches from them;
inference runs on whole slices). Each channel is z-scored (statistics over the whole volume or
over the body, config). The mask is resampled like the images and thresholded at 0.5.

Slices are stored as memory-mappable ``.npy`` files (float16 images ``(S, C, H, W)``, uint8
masks ``(S, H, W)``; H and W differ between patients) with one ``slices.csv`` index, and
``meta/<id>.json`` holds the canonical grid and the original geometry, so a prediction maps back
exactly: :func:`restore_mask` resamples the foreground PROBABILITY onto the original grid
(linear) and thresholds there, as nnU-Net exports its predictions.

``splits.json`` is written here, once, and every later stage reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .pathology import LABEL, pathologic_typing
from .splits import load_splits, make_split, split_of
from .config.schema import Config, PreprocessConfig
from .errors import InputError
from .io import Cohort, Patient, read_image, read_mask, to_array
from .files import atomic_path, read_json, write_json
from .layout import Layout
from .rundir import StageContext


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


# --------------------------------------------------------------------------- orientation and grids
CANONICAL = "LPS"  # x to the patient's left, y posterior, z superior: the identity direction
# (rows, columns) of a slice as numpy axes of the canonical (z, y, x) volume
_SLICE_ORDER = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}


def physical_spacing(spacing: tuple[float, float, float], slice_axis: str) -> tuple[float, float, float]:
    """(x, y, z) spacing of the canonical grid from ``preprocess.spacing`` = (in-plane column,
    in-plane row, slice thickness) for slices cut along ``slice_axis``."""
    col, row, thick = (float(v) for v in spacing)
    return {"axial": (col, row, thick), "coronal": (col, thick, row), "sagittal": (thick, col, row)}[slice_axis]


def canonical(img: sitk.Image) -> sitk.Image:
    """The same image re-stored in the LPS orientation (an exact permutation/flip of its voxels;
    an oblique image gets the closest such order, its direction stays oblique)."""
    return sitk.DICOMOrient(img, CANONICAL)


MAX_GRID_VOXELS = 1 << 28  # 268 M voxels (1 GB of float32 per channel): a finer resampled grid is refused


def canonical_grid(img: sitk.Image, spacing_xyz: tuple[float, float, float]) -> sitk.Image:
    """An empty image with the identity direction covering ``img``'s whole physical extent at
    ``spacing_xyz``. For an image already in LPS on that spacing, the grid is the image's own."""
    size = np.array(img.GetSize())
    corners = [img.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
               for corner in np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in size], indexing="ij")).reshape(3, -1).T]
    lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
    target = np.asarray(spacing_xyz, dtype=float)
    exact = np.maximum(1.0, np.round((hi - lo) / target - 1e-6))
    if float(np.prod(exact)) > MAX_GRID_VOXELS:  # checked before anything is allocated
        raise InputError(f"preprocess.spacing {tuple(round(float(t), 6) for t in target)} mm turns a "
                         f"{' x '.join(f'{e:.0f}' for e in hi - lo)} mm volume into a "
                         f"{' x '.join(f'{n:.0f}' for n in exact)} grid ({float(np.prod(exact)) / 1e6:.0f} M voxels, "
                         f"more than the {MAX_GRID_VOXELS / 1e6:.0f} M allowed); use a coarser spacing, e.g. "
                         "--set preprocess.spacing=[0.7,0.7,4.0].")
    new_size = exact.astype(int)
    centre = (lo + hi) / 2.0
    origin = centre - (new_size - 1) * target / 2.0
    ref = sitk.Image([int(n) for n in new_size], sitk.sitkFloat32)
    ref.SetSpacing(tuple(float(t) for t in target))
    ref.SetOrigin(tuple(float(o) for o in origin))
    return ref


def resample_to(img: sitk.Image, ref: sitk.Image, interp: int = sitk.sitkBSpline) -> sitk.Image:
    """``img`` on ``ref``'s grid as float32 (a copy when the grids already match)."""
    from .io import geometry_mismatch

    img = sitk.Cast(img, sitk.sitkFloat32)
    if geometry_mismatch(img, ref, 1e-6) is None:
        return img
    return sitk.Resample(img, ref, sitk.Transform(), interp, 0.0, sitk.sitkFloat32)


def to_slices(vol: np.ndarray, slice_axis: str) -> np.ndarray:
    """A canonical (z, y, x) volume as slices (S, rows, columns) along ``slice_axis``."""
    return np.ascontiguousarray(np.transpose(vol, _SLICE_ORDER[slice_axis]))


def from_slices(slices: np.ndarray, slice_axis: str) -> np.ndarray:
    """Inverse of :func:`to_slices`."""
    return np.transpose(slices, np.argsort(_SLICE_ORDER[slice_axis]))


@dataclass
class Prepared:
    """A volume ready for the network, and how to map predictions back."""

    image: np.ndarray  # (S, C, H, W) float32: every slice whole, nothing cropped
    mask: np.ndarray | None  # (S, H, W) uint8
    meta: dict


def _geometry(img: sitk.Image) -> dict:
    return {"size": list(img.GetSize()), "spacing": list(img.GetSpacing()), "origin": list(img.GetOrigin()),
            "direction": list(img.GetDirection())}


def prepare_volume(images: list[sitk.Image], cfg: PreprocessConfig, mask: sitk.Image | None = None) -> Prepared:
    """Every sequence on one canonical grid (LPS, identity direction, the first sequence's physical
    extent at the configured spacing; B-spline), z-scored, cut into whole slices along
    ``cfg.slice_axis``. The label is the mask's :func:`soft_mask` thresholded at 0.5."""
    grid = canonical_grid(canonical(images[0]), physical_spacing(cfg.spacing, cfg.slice_axis))
    channels = []
    for img in images:
        arr = to_array(resample_to(canonical(img), grid))
        region = body_mask(arr) if cfg.normalize == "body" else None
        channels.append(zscore(arr, region))
    vol = np.stack([to_slices(c, cfg.slice_axis) for c in channels], axis=1)  # (S, C, H, W)
    m = None
    if mask is not None:
        m = (soft_mask(mask, grid, cfg.slice_axis) > 0.5).astype(np.uint8)
    meta = {
        "original": _geometry(images[0]),
        "grid": _geometry(grid),
        "slice_axis": cfg.slice_axis,
        "spacing": list(cfg.spacing),
        "channel_mean": [float(c.mean()) for c in channels],
        "channel_sd": [float(c.std()) for c in channels],
    }
    return Prepared(vol.astype(np.float32), m, meta)


def soft_mask(mask: sitk.Image, grid: sitk.Image, slice_axis: str) -> np.ndarray:
    """The mask on the canonical grid as slices (S, H, W) of values in [0, 1], interpolated like the
    images (B-spline): the probability map a perfect network would output. Its restored form is the
    ceiling of :func:`restore_mask` (a 10 mm lesion on a 0.5 x 0.5 x 3 mm grid, processed at
    0.7 x 0.7 x 4 mm, comes back with Dice 0.996; thresholded labels restored alone give 0.79)."""
    soft = to_array(resample_to(canonical(mask), grid))
    return np.clip(to_slices(soft, slice_axis), 0.0, 1.0)


def meta_grid(meta: dict) -> sitk.Image:
    """The empty canonical grid a prepared volume's ``meta`` describes."""
    g = meta["grid"]
    ref = sitk.Image([int(n) for n in g["size"]], sitk.sitkFloat32)
    ref.SetSpacing(tuple(g["spacing"]))
    ref.SetOrigin(tuple(g["origin"]))
    ref.SetDirection(tuple(g["direction"]))
    return ref


def grid_image(slices: np.ndarray, meta: dict) -> sitk.Image:
    """Slices (S, H, W) of a prepared volume as an image on its canonical grid."""
    img = sitk.GetImageFromArray(from_slices(slices, meta["slice_axis"]))
    img.CopyInformation(meta_grid(meta))
    return img


def restore_probabilities(probs: np.ndarray, meta: dict, reference: sitk.Image) -> sitk.Image:
    """Foreground probabilities (S, H, W) mapped onto ``reference``'s original grid (linear)."""
    return sitk.Resample(grid_image(probs.astype(np.float32), meta), reference, sitk.Transform(),
                         sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def restore_mask(probs: np.ndarray, meta: dict, reference: sitk.Image, threshold: float = 0.5) -> sitk.Image:
    """nnU-Net's export: probabilities resampled onto the original grid, thresholded there."""
    return sitk.Cast(restore_probabilities(probs, meta, reference) > threshold, sitk.sitkUInt8)


# --------------------------------------------------------------------------- the stage
def _process_patient(p: Patient, sequences: tuple[str, ...], cfg: PreprocessConfig, out: Layout,
                     mask_label: int | None = None) -> dict:
    imgs = [read_image(p.images[s], p.id, s) for s in sequences]
    mask = read_mask(p.mask, p.id, mask_label) if p.mask is not None else None
    try:
        prep = prepare_volume(imgs, cfg, mask)
    except InputError as e:
        raise InputError(f"Case '{p.id}': {e}") from None
    with atomic_path(out.slice_file(p.id, "image")) as tmp:
        np.save(tmp, prep.image.astype(np.float16))
    lesion_px = np.zeros(prep.image.shape[0], dtype=int)
    if prep.mask is not None:
        with atomic_path(out.slice_file(p.id, "mask")) as tmp:
            np.save(tmp, prep.mask)
        lesion_px = prep.mask.reshape(prep.mask.shape[0], -1).sum(axis=1)
    write_json(out.meta_file(p.id), prep.meta)
    stats = {"mean": prep.meta["channel_mean"][0], "sd": prep.meta["channel_sd"][0]}
    return {"id": p.id, "lesion_px": lesion_px.tolist(), "shape": list(prep.image.shape[2:]), **stats}


def split_for_cohort(cohort: Cohort, cfg: Config, lesion_ml: dict[str, float] | None = None) -> dict:
    """THE patient split: stratified by the pathology label when every patient has one; else (a
    segmentation-only cohort) by lesion-volume tertile when every patient has a lesion; else random."""
    s = cfg.preprocess.split
    strata, by = None, None
    if s.stratify and cohort.clinical is not None:
        y = pathologic_typing(cohort.clinical.drop_duplicates(cfg.data.id_column), cfg.data)
        labels = {pid: int(y[pid]) for pid in cohort.ids if pid in y.index}
        if len(labels) == len(cohort.ids):
            strata, by = labels, LABEL
    if strata is None and s.stratify and lesion_ml and all(lesion_ml.get(pid, 0) > 0 for pid in cohort.ids):
        cuts = np.quantile([lesion_ml[pid] for pid in cohort.ids], [1 / 3, 2 / 3])
        strata, by = {pid: int(np.searchsorted(cuts, lesion_ml[pid], side="right")) for pid in cohort.ids}, \
            "lesion_volume_tertile"
    parts = make_split(cohort.ids, strata, (s.train, s.val, s.test), cfg.run.seed, stratify=strata is not None)
    return {**parts, "seed": cfg.run.seed, "stratified_by": by, "fractions": [s.train, s.val, s.test]}


def _development_ids(cohort: Cohort, cfg: Config) -> list[str] | None:
    """Train + val patients of THE split when it is known before resampling (label-stratified or unstratified);
    None when it is stratified by lesion volume, which needs the resampled masks (then all patients plan)."""
    pre = split_for_cohort(cohort, cfg)
    if pre["stratified_by"] == LABEL or not cfg.preprocess.split.stratify:
        return pre["train"] + pre["val"]
    return None


def run(cfg: Config, inputs: Layout, st: StageContext) -> dict:
    """The preprocess stage: every patient of ``inputs.cohort`` into ``preprocess/``, and ``splits.json``.
    With ``segmentation.plan`` the spacing is the plan's target spacing (:mod:`cervirad.target_spacing`)."""
    import dataclasses

    from joblib import Parallel, delayed

    from .target_spacing import planned_spacing

    cohort = inputs.cohort
    fp = read_json(inputs.fingerprint) if inputs.fingerprint.is_file() else None
    spacing, why = planned_spacing(cfg, fp, _development_ids(cohort, cfg))
    if tuple(spacing) != tuple(cfg.preprocess.spacing):
        cfg = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, spacing=tuple(spacing)))
        st.info["planned_spacing"] = {"spacing": list(spacing), "why": why}
    sequences = tuple(cfg.segmentation.input_sequences)
    out = Layout(st.staging)
    results = Parallel(n_jobs=cfg.execution.workers)(
        delayed(_process_patient)(p, sequences, cfg.preprocess, out, cfg.data.mask_label) for p in cohort.patients)
    voxel_ml = float(np.prod(cfg.preprocess.spacing)) / 1000.0
    splits = split_for_cohort(cohort, cfg, {r["id"]: sum(r["lesion_px"]) * voxel_ml for r in results})
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
        "slice_axis": cfg.slice_axis,
        "normalize": cfg.normalize,
        "slices_with_lesion": int(df.has_lesion.sum()),
        "slices_without_lesion": int((~df.has_lesion).sum()),
        "per_split": per_split,
        "slice_shape": {"min": np.min([r["shape"] for r in results], axis=0).tolist(),
                        "max": np.max([r["shape"] for r in results], axis=0).tolist()},
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
    return read_json(Layout(run_path).meta_file(pid))


__all__ = ["zscore", "body_mask", "canonical", "canonical_grid", "to_slices", "from_slices", "prepare_volume",
           "soft_mask", "restore_mask", "run", "load_patient_slices", "load_meta", "load_splits"]
