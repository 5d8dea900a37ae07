"""Segmentation metrics (SPEC §5), per patient in 3D and per slice, with bootstrap CIs.

From the voxel confusion counts TP, FP, FN, TN of a binary prediction against the reference:

- ``dice`` = 2TP / (2TP + FP + FN); ``f1`` = F1 score of the foreground class, which for
  binary masks is the same number as Dice (reported under both names because the paper does);
- ``iou_foreground`` = TP / (TP + FP + FN)  (Jaccard of the lesion);
- ``iou_background`` = TN / (TN + FP + FN);
- ``iou_mean_fg_bg`` = (iou_foreground + iou_background) / 2 — the two-class mean IoU. The
  paper's IoU 0.9443 next to Dice 0.5980 is only possible as this mean (SPEC §5);
- ``pixel_accuracy`` = (TP + TN) / all, ``precision`` = TP / (TP + FP), ``recall`` =
  TP / (TP + FN), ``specificity`` = TN / (TN + FP);
- ``mae`` = mean |p − t| of the predicted PROBABILITY p against the reference t on the
  network's slice grid (a hard mask would make it 1 − pixel accuracy); ``mae_255`` is the same on
  the paper's 0–255 scale (× 255);
- ``slice_detection_accuracy/sensitivity/specificity``: lesion present/absent per slice of the
  original grid (any reference voxel vs any predicted voxel), the slice-level kind of numbers the
  paper reports (accuracy 0.80, specificity 0.655) — distinct from the voxel-level ones;
- ``detected`` (per patient; its mean is ``detection_rate``): 1 when the prediction overlaps the
  lesion — at least one predicted voxel lies inside the reference mask (TP > 0) — else 0 (an empty
  prediction, or one that lies wholly outside the lesion, is a MISS). Undefined (NaN, left out of
  the rate) when the reference mask is empty, as there is no lesion to detect;
- Hausdorff distance (SimpleITK ``HausdorffDistanceImageFilter``, physical spacing) and HD95 =
  max(P95 of d(surface A → B), P95 of d(surface B → A)) with the distances from
  ``scipy.ndimage.distance_transform_edt`` using the voxel spacing. Three figures each:

  * ``hausdorff_mm_detected`` / ``hd95_mm_detected``: the distance over DETECTED lesions only
    (NaN for a miss); metrics.json gives their mean and ``n_patients_detected`` beside it;
  * ``hausdorff_mm`` / ``hd95_mm`` (the headline): the same distance for a detected lesion, and
    for a MISS the penalty ``hd_miss_penalty`` = the physical diagonal of the patient's ORIGINAL
    image grid, sqrt(sum((size · spacing)²)) in mm — at least as large as any distance two
    voxels of that grid can have, so a missed lesion can never lower the mean (recorded in
    metrics.json as ``"hd_miss_penalty": "image diagonal (mm)"``, with ``n_patients_missed``);
  * both are undefined (NaN, left out of the means and counted in ``n_patients_hd_undefined``)
    only when the reference mask is empty.
- ``lesion_diameter_mm`` (per patient): the greatest 3D diameter of the reference mask — the
  largest distance between two of its voxel centres in physical coordinates (so a one-voxel lesion
  is 0 mm; the whole mask counts as one lesion). ``by_lesion_size`` in metrics.json gives
  ``dice``, ``iou_foreground`` and ``detection_rate`` ({value, ci_low, ci_high}, bootstrapped
  within the band) and ``n_patients`` per band ``LESION_BANDS``: < 10 mm, 10–20 mm, 20–40 mm,
  ≥ 40 mm (lower bound inclusive); an empty band has n_patients 0 and no metrics;
- ``slice_dice`` / ``slice_iou_foreground``: the same ratios per axial slice, averaged over the
  slices where the reference or the prediction is non-empty;
- ``infer_ms_per_slice``: network time per slice (batched, after warm-up).

Empty-mask conventions: a ratio whose denominator is 0 is 1.0 when both masks are empty
(perfect agreement) and 0.0 otherwise.

Patient-level values are aggregated as the mean over test patients with a percentile bootstrap
95 % CI (patients resampled with replacement, ``segmentation.bootstrap`` replicates).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

METRICS = ("dice", "f1", "iou_foreground", "iou_background", "iou_mean_fg_bg", "pixel_accuracy", "precision",
           "recall", "specificity", "mae", "hausdorff_mm", "hd95_mm", "hausdorff_mm_detected", "hd95_mm_detected",
           "slice_dice", "slice_iou_foreground", "slice_detection_accuracy", "slice_detection_sensitivity",
           "slice_detection_specificity", "mae_255", "infer_ms_per_slice", "dice_unprocessed")
#: per-patient column -> metrics.json name, for the ones that are renamed when averaged
RATES = {"detected": "detection_rate"}
HD_MISS_PENALTY = "image diagonal (mm)"
#: lesion-size strata: name -> [low, high) of the greatest lesion diameter in mm
LESION_BANDS = {"<10mm": (0.0, 10.0), "10-20mm": (10.0, 20.0), "20-40mm": (20.0, 40.0), ">=40mm": (40.0, float("inf"))}
STRATA_METRICS = ("dice", "iou_foreground", "detection_rate")


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num / den)


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) voxel counts of two binary arrays."""
    p, t = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return tp, fp, fn, int(p.size) - tp - fp - fn


def overlap_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, F1, IoUs, accuracy, precision, recall, specificity (module docstring)."""
    tp, fp, fn, tn = confusion(pred, truth)
    empty = tp + fp + fn == 0
    iou_fg = _ratio(tp, tp + fp + fn, empty)
    iou_bg = _ratio(tn, tn + fp + fn, tn + fp + fn == 0)
    dice = _ratio(2 * tp, 2 * tp + fp + fn, empty)
    return {"dice": dice, "f1": dice, "iou_foreground": iou_fg, "iou_background": iou_bg,
            "iou_mean_fg_bg": (iou_fg + iou_bg) / 2.0, "pixel_accuracy": (tp + tn) / max(1, tp + fp + fn + tn),
            "precision": _ratio(tp, tp + fp, empty), "recall": _ratio(tp, tp + fn, empty),
            "specificity": _ratio(tn, tn + fp, True)}


def crop_to_union(a: np.ndarray, b: np.ndarray, pad: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus ``pad`` voxels. Surface distances
    are unchanged (every surface voxel lies inside the box) and are computed far faster."""
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = idx.max(0) + pad + 1
    box = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    return np.pad(a[box], pad), np.pad(b[box], pad)


def hausdorff_mm(pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Symmetric Hausdorff distance in mm (SimpleITK); NaN when either mask is empty."""
    if not pred.any() or not truth.any():
        return float("nan")
    pred, truth = crop_to_union(pred.astype(bool), truth.astype(bool))
    a, b = sitk.GetImageFromArray(pred.astype(np.uint8)), sitk.GetImageFromArray(truth.astype(np.uint8))
    for img in (a, b):
        img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(a, b)
    return float(f.GetHausdorffDistance())


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """max(P95 d(∂pred → ∂truth), P95 d(∂truth → ∂pred)) in mm; NaN when either mask is empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any() or not t.any():
        return float("nan")
    p, t = crop_to_union(p, t)
    sp, st = _surface(p), _surface(t)
    dt_t = ndimage.distance_transform_edt(~st, sampling=spacing_zyx)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx)
    return float(max(np.percentile(dt_t[sp], 95), np.percentile(dt_p[st], 95)))


def slice_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean per-slice Dice and foreground IoU over slices where either mask is non-empty."""
    dices, ious = [], []
    for ps, ts in zip(pred.astype(bool), truth.astype(bool)):
        if ps.any() or ts.any():
            m = overlap_metrics(ps, ts)
            dices.append(m["dice"])
            ious.append(m["iou_foreground"])
    out = {"slice_dice": float(np.mean(dices)) if dices else 1.0,
           "slice_iou_foreground": float(np.mean(ious)) if ious else 1.0}
    return {**out, **slice_detection(pred, truth)}


def slice_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Slice-level lesion DETECTION (the kind of accuracy/specificity the paper reports): each slice
    is 'lesion present' when its reference mask has a voxel, 'predicted present' when the prediction
    has one; accuracy, sensitivity and specificity over the slices (NaN when undefined). Not to be
    confused with the voxel-level ``pixel_accuracy``/``recall``/``specificity``."""
    t = truth.reshape(len(truth), -1).any(axis=1)
    p = pred.reshape(len(pred), -1).any(axis=1)
    tp, tn = int((p & t).sum()), int((~p & ~t).sum())
    fp, fn = int((p & ~t).sum()), int((~p & t).sum())
    return {"slice_detection_accuracy": (tp + tn) / len(t) if len(t) else float("nan"),
            "slice_detection_sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "slice_detection_specificity": tn / (tn + fp) if tn + fp else float("nan")}


def image_diagonal_mm(size: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """Physical diagonal sqrt(sum((size · spacing)²)) of an image grid in mm (size and spacing in
    the same axis order)."""
    return float(np.sqrt(np.sum((np.asarray(size, float) * np.asarray(spacing, float)) ** 2)))


def lesion_diameter_mm(truth: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Greatest distance (mm) between two voxel centres of the reference mask; NaN when it is empty."""
    t = truth.astype(bool)
    if not t.any():
        return float("nan")
    pts = np.argwhere(_surface(crop_to_union(t, t)[0])).astype(float) * np.asarray(spacing_zyx, float)
    if len(pts) > 4:
        from scipy.spatial import ConvexHull

        pts = pts[ConvexHull(pts, qhull_options="QJ").vertices]  # "QJ": flat (one-slice) lesions too
    from scipy.spatial.distance import pdist

    return float(pdist(pts).max()) if len(pts) > 1 else 0.0


def lesion_band(diameter_mm: float) -> str | None:
    """Name of the ``LESION_BANDS`` band holding ``diameter_mm`` (None when NaN)."""
    for name, (lo, hi) in LESION_BANDS.items():
        if lo <= diameter_mm < hi:
            return name
    return None


def detected(pred: np.ndarray, truth: np.ndarray) -> float:
    """1.0 when at least one predicted voxel lies inside the reference lesion, 0.0 when none does
    (a miss), NaN when the reference is empty (nothing to detect)."""
    t = truth.astype(bool)
    if not t.any():
        return float("nan")
    return float(np.any(pred.astype(bool) & t))


def patient_metrics(pred: np.ndarray, truth: np.ndarray, spacing_zyx: tuple[float, float, float],
                    probs: np.ndarray | None = None, truth_on_prob_grid: np.ndarray | None = None,
                    diagonal_mm: float | None = None) -> dict[str, float]:
    """Every metric of one patient (3D arrays in (z, y, x) order, spacing in mm).

    ``diagonal_mm`` is the HD/HD95 penalty for a missed lesion: the physical diagonal of the
    patient's original image grid (:func:`image_diagonal_mm`). By default it is taken from the
    arrays' own shape and ``spacing_zyx`` — the same number when the arrays are the full image.
    """
    out = overlap_metrics(pred, truth)
    hit = detected(pred, truth)
    if diagonal_mm is None:
        diagonal_mm = image_diagonal_mm(np.shape(truth), spacing_zyx)
    out["detected"] = hit
    if hit == 1.0:
        hd, h95 = hausdorff_mm(pred, truth, spacing_zyx), hd95_mm(pred, truth, spacing_zyx)
    else:
        hd = h95 = float("nan")
    out["hausdorff_mm_detected"], out["hd95_mm_detected"] = hd, h95
    penalty = float(diagonal_mm) if hit == 0.0 else float("nan")
    out["hausdorff_mm"] = penalty if hit == 0.0 else hd
    out["hd95_mm"] = penalty if hit == 0.0 else h95
    out["hd_miss_penalty_mm"] = penalty
    out["lesion_diameter_mm"] = lesion_diameter_mm(truth, spacing_zyx)
    out.update(slice_metrics(pred, truth))
    if probs is not None and truth_on_prob_grid is not None:
        out["mae"] = float(np.mean(np.abs(probs.astype(np.float32) - truth_on_prob_grid.astype(np.float32))))
        out["mae_255"] = 255.0 * out["mae"]  # the paper's 0-255 (8-bit image) scale
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """Mean of the finite values with a percentile bootstrap 95 % CI."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1) if n_boot > 0 else np.array([v.mean()])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"value": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def summarise(per_patient: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Flat metrics.json content: each metric -> {value, ci_low, ci_high} over patients, plus the
    counts behind the detection rate and the HD figures (module docstring)."""
    out: dict = {"n_patients": int(len(per_patient))}
    for k in METRICS:
        if k in per_patient:
            out[k] = bootstrap_ci(per_patient[k].to_numpy(), n_boot, seed)
    for col, name in RATES.items():
        if col in per_patient:
            out[name] = bootstrap_ci(per_patient[col].to_numpy(), n_boot, seed)
    if "detected" in per_patient:
        hit = per_patient["detected"]
        out["n_patients_detected"] = int((hit == 1.0).sum())
        out["n_patients_missed"] = int((hit == 0.0).sum())
        out["hd_miss_penalty"] = HD_MISS_PENALTY
    out["n_patients_hd_undefined"] = int(per_patient["hausdorff_mm"].isna().sum()) if "hausdorff_mm" in per_patient else 0
    if "lesion_diameter_mm" in per_patient:
        out["by_lesion_size"] = by_lesion_size(per_patient, n_boot, seed)
    return out


def by_lesion_size(per_patient: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """{band: {n_patients, dice, iou_foreground, detection_rate}} over ``LESION_BANDS``."""
    bands = per_patient["lesion_diameter_mm"].map(lesion_band)
    column = {name: col for col, name in RATES.items()}  # detection_rate is the mean of per-patient "detected"
    cols = {k: column.get(k, k) for k in STRATA_METRICS}
    out = {}
    for name in LESION_BANDS:
        sub = per_patient[bands == name]
        entry: dict = {"n_patients": int(len(sub))}
        if len(sub):
            entry.update({k: bootstrap_ci(sub[c].to_numpy(), n_boot, seed) for k, c in cols.items() if c in sub})
        out[name] = entry
    return out
