"""Feature robustness by image and mask perturbation, and the intraclass correlation (ICC).

A deployed model sees masks drawn by CRFE, never the expert's; a radiomics feature that changes
when the contour moves by a voxel is noise. Following Zwanenburg et al. (Sci Rep 2019, "Assessing
robustness of radiomic features by image perturbation"), every TRAINING patient (the ``train`` and
``val`` parts of splits.json: the patients the classifier is fitted on; test patients never) is
extracted ``features.robustness.perturbations`` = N more times from a seeded chain, and each
feature gets ICC(1,1) and ICC(3,1) with 95 % CIs across the N versions -> ``features/robustness.csv``.

The chain (each element a switch of ``features.robustness``), in this order:

1. ``noise``: additive Gaussian noise, sd = ``noise_fraction`` x the image's noise sd, estimated
   as median(|HH|) / 0.6745 of the in-plane Haar diagonal wavelet coefficients (Donoho's MAD
   estimator, as Zwanenburg et al. use Chang et al.'s wavelet estimate).
2. ``rotation`` / ``translation``: one rigid transform of image and mask (physical space): a
   rotation uniform in [-rotation_deg, rotation_deg] about the slice axis through the lesion's
   centre, and a shift uniform in [-0.5, 0.5] voxel along each axis. The image is resampled
   linearly, the mask linearly and thresholded at 0.5 (as in the paper).
3. ``volume``: the mask is dilated (+1), kept (0) or eroded (-1) by one voxel, drawn uniformly; the
   structuring element spans the in-plane axes only when the slices are more than twice as thick
   as the in-plane spacing (one 3 mm slice is not a small change).
4. ``contour``: the boundary moves by a smooth random amount: the mask becomes
   ``signed_distance < field``, where the field is white noise smoothed with a Gaussian of 2
   in-plane voxels and scaled to sd ``contour_amplitude`` (in-plane voxels).

Every random draw comes from ``numpy.random.default_rng([seed, patient, index(, sequence)])``:
perturbation i of a patient is the same whatever N is, and the same for all its sequences (the
noise excepted), so a raised N reuses every cached extraction.

Execution: each (patient, sequence, perturbation) is one task of the feature stage's case executor
(:func:`cervirad.features.cases.run_jobs`: loky or Dask, largest lesion first) and one entry of its
per-case cache (key = the unperturbed case's key + the perturbation's parameters). The worker
perturbs, writes the pair to a temporary folder and runs the stage's own
:func:`~cervirad.features.cases.extract_case` on it. A perturbation that leaves fewer than two
lesion voxels (a tiny lesion eroded away) is left out with a warning; that patient's ICC rows use
its remaining perturbations (ICC(1,1) takes unequal counts; ICC(3,1) uses the patients with all N).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..files import hash_obj
from .cases import CaseCache, CaseJob, case_key, extract_case, run_jobs
from .families import family_of

log = logging.getLogger(__name__)

CODE_VERSION = 1  # bump when the perturbation chain changes, to invalidate cached perturbed extractions
COLUMNS = ["feature", "icc1", "icc1_ci_low", "icc1_ci_high", "icc3", "icc3_ci_low", "icc3_ci_high",
           "feature_class", "image_type", "n_patients", "n_complete", "n_perturbations"]


# --------------------------------------------------------------------------- ICC
def icc(X: np.ndarray, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """ICC(1,1) and ICC(3,1) (Shrout & Fleiss 1979) with ``1 - alpha`` CIs, per feature.

    ``X``: (subjects, raters, features); NaN = missing. ICC(1,1) is the one-way random model on
    every observed value (unequal counts per subject: ``k0 = (N - sum n_i^2 / N) / (a - 1)`` replaces
    k); ICC(3,1) the two-way mixed consistency model on the subjects with all raters. The CIs are the
    exact F-based ones (pingouin's ``intraclass_corr`` gives the same for complete data).
    Returns arrays of length ``features``: icc1, icc1_ci_low, icc1_ci_high, icc3, icc3_ci_low,
    icc3_ci_high, n_patients (subjects with a value), n_complete (subjects with all raters).
    """
    from scipy.stats import f as fdist

    X = np.asarray(X, dtype=float)
    if X.ndim == 2:
        X = X[:, :, None]
    seen = np.isfinite(X)
    x = np.where(seen, X, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # one-way random: between / within subjects, unequal group sizes allowed
        n_i = seen.sum(axis=1)  # (subjects, features)
        N, a = n_i.sum(axis=0), (n_i > 0).sum(axis=0)
        mean_i = x.sum(axis=1) / np.where(n_i > 0, n_i, 1)
        grand = x.sum(axis=(0, 1)) / N
        ssb = (n_i * (mean_i - grand) ** 2).sum(axis=0)
        ssw = (np.where(seen, (x - mean_i[:, None, :]) ** 2, 0.0)).sum(axis=(0, 1))
        dfb, dfw = a - 1, N - a
        msb, msw = ssb / dfb, ssw / dfw
        k0 = (N - (n_i ** 2).sum(axis=0) / N) / dfb
        icc1 = (msb - msw) / (msb + (k0 - 1) * msw)
        f1 = msb / msw
        lo1 = _ci_bound(f1 / fdist.ppf(1 - alpha / 2, dfb, dfw), k0)
        hi1 = _ci_bound(f1 * fdist.ppf(1 - alpha / 2, dfw, dfb), k0)
        # two-way mixed, consistency: complete subjects only
        k = X.shape[1]
        full = (n_i == k)[:, None, :]
        n = full[:, 0, :].sum(axis=0)
        xc = np.where(full, x, 0.0)
        g = xc.sum(axis=(0, 1)) / (n * k)
        row = xc.sum(axis=1) / k  # subject means (0 for incomplete subjects, which are masked below)
        col = xc.sum(axis=0) / n  # rater means
        ssr = k * (np.where(full[:, 0, :], (row - g) ** 2, 0.0)).sum(axis=0)
        ssc = n * ((col - g) ** 2).sum(axis=0)
        sst = (np.where(full, (xc - g) ** 2, 0.0)).sum(axis=(0, 1))
        dfr, dfe = n - 1, (n - 1) * (k - 1)
        msr, mse = ssr / dfr, (sst - ssr - ssc) / dfe
        icc3 = (msr - mse) / (msr + (k - 1) * mse)
        f3 = msr / mse
        lo3 = _ci_bound(f3 / fdist.ppf(1 - alpha / 2, dfr, dfe), k)
        hi3 = _ci_bound(f3 * fdist.ppf(1 - alpha / 2, dfe, dfr), k)
    bad3 = (n < 2) | (k < 2)
    bad1 = (a < 2) | (dfw < 1)
    nan = np.nan
    return {"icc1": np.where(bad1, nan, icc1), "icc1_ci_low": np.where(bad1, nan, lo1),
            "icc1_ci_high": np.where(bad1, nan, hi1), "icc3": np.where(bad3, nan, icc3),
            "icc3_ci_low": np.where(bad3, nan, lo3), "icc3_ci_high": np.where(bad3, nan, hi3),
            "n_patients": a, "n_complete": n}


def _ci_bound(F: np.ndarray, k) -> np.ndarray:
    return (F - 1) / (F + k - 1)


# --------------------------------------------------------------------------- the perturbation chain
@dataclass(frozen=True)
class Perturbation:
    """One draw of the chain; ``None``/0 = that element off."""

    index: int
    stream: int  # seeds this draw's contour field and noise (drawn from [seed, patient, index])
    noise_fraction: float = 0.0
    angle_deg: float = 0.0
    shift_voxels: tuple[float, float, float] = (0.0, 0.0, 0.0)  # along the image's x, y, z axes
    volume_step: int = 0  # +1 dilate, -1 erode, 0 keep
    contour_amplitude: float = 0.0  # in-plane voxels (sd of the boundary displacement)


def _rng(*parts: Any) -> np.random.Generator:
    ints = [int(hash_obj(p)[:8], 16) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(ints)


def draw(rcfg, seed: int, patient_id: str, index: int) -> Perturbation:
    """Perturbation ``index`` of a patient: the same for every N and every sequence."""
    rng = _rng(seed, patient_id, index)
    stream = int(rng.integers(2 ** 32))
    angle = float(rng.uniform(-rcfg.rotation_deg, rcfg.rotation_deg))  # drawn whatever the switches say:
    shift = tuple(float(v) for v in rng.uniform(-0.5, 0.5, 3))  # turning one off leaves the others as they were
    step = int(rng.integers(-1, 2))
    return Perturbation(index, stream, rcfg.noise_fraction if rcfg.noise else 0.0,
                        angle if rcfg.rotation else 0.0, shift if rcfg.translation else (0.0, 0.0, 0.0),
                        step if rcfg.volume else 0, rcfg.contour_amplitude if rcfg.contour else 0.0)


def noise_sd(arr: np.ndarray, slice_axis: int = 0) -> float:
    """Noise sd of an image: median(|HH|) / 0.6745 of the in-plane Haar diagonal coefficients (2 x 2 blocks
    of one constant value, such as zero padding outside the field of view, left out)."""
    a = np.moveaxis(np.asarray(arr, dtype=float), slice_axis, 0)
    a = a[:, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]
    q = (a[:, 0::2, 0::2], a[:, 1::2, 0::2], a[:, 0::2, 1::2], a[:, 1::2, 1::2])
    hh = (q[0] - q[1] - q[2] + q[3]) / 2.0
    flat = (q[0] == q[1]) & (q[0] == q[2]) & (q[0] == q[3])  # constant blocks (zero padding) carry no noise
    hh = hh[~flat]
    return float(np.median(np.abs(hh)) / 0.6745) if hh.size else 0.0


def _slice_axis(spacing_zyx: tuple[float, ...]) -> int:
    """Numpy axis of the slices: the one of largest spacing (axis 0 when isotropic)."""
    sp = np.asarray(spacing_zyx, dtype=float)
    return int(np.argmax(sp)) if sp.max() > sp.min() * (1 + 1e-6) else 0


def _footprint(spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """6-connected cross over the axes whose spacing is at most twice the finest (in-plane for thick slices)."""
    sp = np.asarray(spacing_zyx, dtype=float)
    use = sp <= 2 * sp.min()
    fp = np.zeros((3, 3, 3), dtype=bool)
    fp[1, 1, 1] = True
    for ax in np.where(use)[0]:
        idx = [1, 1, 1]
        for v in (0, 2):
            idx[ax] = v
            fp[tuple(idx)] = True
    return fp


def adapt_volume(roi: np.ndarray, step: int, spacing_zyx: tuple[float, ...] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The mask dilated (``step`` > 0) or eroded (< 0) by ``|step|`` voxels (see :func:`_footprint`)."""
    from scipy import ndimage

    if step == 0:
        return roi.astype(bool)
    fp = _footprint(spacing_zyx)
    op = ndimage.binary_dilation if step > 0 else ndimage.binary_erosion
    return op(roi.astype(bool), structure=fp, iterations=abs(step), border_value=0)


def jitter_contour(roi: np.ndarray, amplitude: float, spacing_zyx: tuple[float, ...],
                   rng: np.random.Generator) -> np.ndarray:
    """Move the boundary by a smooth random field of sd ``amplitude`` in-plane voxels."""
    from scipy import ndimage

    roi = roi.astype(bool)
    if amplitude <= 0 or not roi.any():
        return roi
    sp = np.asarray(spacing_zyx, dtype=float)
    unit = sp / sp.min()  # distances in in-plane voxels
    pad = np.ceil((4 * amplitude + 2) / unit).astype(int)
    nz = np.nonzero(roi)
    lo = np.maximum([int(v.min()) for v in nz] - pad, 0)
    hi = np.minimum([int(v.max()) + 1 for v in nz] + pad, roi.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = roi[box]
    signed = ndimage.distance_transform_edt(~sub, sampling=unit) - ndimage.distance_transform_edt(sub, sampling=unit)
    signed = np.where(sub, signed + 0.5, signed - 0.5)  # the boundary between the two voxels is at 0
    field = ndimage.gaussian_filter(rng.standard_normal(sub.shape), sigma=2.0 / unit)
    sd = field.std()
    field = field / sd * amplitude if sd > 0 else field
    out = np.zeros_like(roi)
    out[box] = signed < field
    return out


def _rigid(p: Perturbation, centre: tuple[float, ...], axis: tuple[float, ...], spacing: tuple[float, ...],
           direction: tuple[float, ...]):
    import SimpleITK as sitk

    t = sitk.VersorRigid3DTransform()
    t.SetCenter(centre)
    t.SetRotation(axis, float(np.deg2rad(p.angle_deg)))
    D = np.asarray(direction, dtype=float).reshape(3, 3)
    t.SetTranslation(tuple(float(v) for v in D @ (np.asarray(p.shift_voxels) * np.asarray(spacing))))
    return t


def perturb(image, mask, p: Perturbation, label: int = 1, noise_rng: np.random.Generator | None = None):
    """The perturbed (image, mask) of one draw: SimpleITK images in, SimpleITK images out.

    The mask comes back binary with value ``label``; rotation and shift are physical, so an image on
    another grid than the mask moves with it. ``noise_rng``: the draw for the noise (per sequence).
    """
    import SimpleITK as sitk

    mask_arr = sitk.GetArrayViewFromImage(mask) == label
    spacing_zyx = tuple(reversed(mask.GetSpacing()))
    rng = _rng(p.stream, 1)
    if p.noise_fraction > 0:
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        sd = noise_sd(arr, _slice_axis(tuple(reversed(image.GetSpacing()))))
        arr += (noise_rng or _rng(p.stream, 2)).normal(0.0, p.noise_fraction * sd, arr.shape).astype(
            np.float32)
        noisy = sitk.GetImageFromArray(arr)
        noisy.CopyInformation(image)
        image = noisy
    roi = mask_arr
    if p.angle_deg or any(p.shift_voxels):
        ax = 2 - _slice_axis(spacing_zyx)  # SimpleITK index of the slice axis
        D = np.asarray(mask.GetDirection(), dtype=float).reshape(3, 3)
        idx = np.argwhere(mask_arr).mean(axis=0)[::-1] if mask_arr.any() else np.asarray(mask.GetSize()) / 2
        centre = mask.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx))
        t = _rigid(p, centre, tuple(D[:, ax]), mask.GetSpacing(), mask.GetDirection())
        fill = float(np.min(sitk.GetArrayViewFromImage(image)))
        image = sitk.Resample(image, image, t, sitk.sitkLinear, fill, sitk.sitkFloat32)
        m = sitk.GetImageFromArray(roi.astype(np.float32))
        m.CopyInformation(mask)
        roi = sitk.GetArrayFromImage(sitk.Resample(m, m, t, sitk.sitkLinear, 0.0)) >= 0.5
    roi = adapt_volume(roi, p.volume_step, spacing_zyx)
    roi = jitter_contour(roi, p.contour_amplitude, spacing_zyx, rng)
    out = sitk.GetImageFromArray(np.where(roi, label, 0).astype(np.uint8 if label < 256 else np.uint16))
    out.CopyInformation(mask)
    return image, out


# --------------------------------------------------------------------------- the worker
@dataclass(frozen=True)
class PerturbedJob:
    base: CaseJob  # the unperturbed case (its files, settings and scheduling size)
    perturbation: Perturbation
    key: str = ""


def perturbed_key(base_key: str, p: Perturbation) -> str:
    return hash_obj({"case": base_key, "perturbation": asdict(p), "code": CODE_VERSION})


def extract_perturbed(job: PerturbedJob) -> dict:
    """Perturb one case and extract it with the stage's worker; ``{"error": ...}`` instead of raising."""
    import SimpleITK as sitk

    from ..io import read_image

    b, p = job.base, job.perturbation
    head = {"patient_id": b.patient_id, "sequence": b.sequence, "key": job.key, "perturbation": p.index}
    label = int(b.params.get("setting", {}).get("label", 1))
    try:
        image = read_image(b.image, b.patient_id, b.sequence)
        mask = read_image(b.mask, b.patient_id, "mask")
        image, mask = perturb(image, mask, p, label, _rng(p.stream, 2, b.sequence))
    except Exception as e:  # a failing case must not stop the others
        return {**head, "error": f"Perturbation {p.index} of case '{b.patient_id}' ({b.sequence}) failed: "
                                 f"{' '.join(str(e).split())[:300]}"}
    voxels = int((sitk.GetArrayViewFromImage(mask) == label).sum())
    if voxels < 2:
        return {**head, "emptied": True,
                "error": f"Perturbation {p.index} of case '{b.patient_id}' leaves {voxels} lesion voxel(s) "
                         f"(volume step {p.volume_step:+d}, contour amplitude {p.contour_amplitude:g}); left out of "
                         "its ICC rows. Lower features.robustness.contour_amplitude or switch off 'volume' for "
                         "lesions this small."}
    with tempfile.TemporaryDirectory(prefix="cervirad-perturbed-") as tmp:
        img_path, msk_path = Path(tmp) / "image.nii", Path(tmp) / "mask.nii"
        sitk.WriteImage(image, str(img_path))
        sitk.WriteImage(mask, str(msk_path))
        res = extract_case(replace(b, image=str(img_path), mask=str(msk_path), key=job.key))
    return {**res, "perturbation": p.index}


# --------------------------------------------------------------------------- the stage's part
def perturbed_jobs(jobs: list[CaseJob], patients: set[str], rcfg, seed: int) -> list[PerturbedJob]:
    """One job per (training patient, sequence, perturbation), largest lesion first."""
    out = []
    for job in jobs:
        if job.patient_id not in patients:
            continue
        base_key = case_key(job)  # the unperturbed case's cache key: its files' contents and settings
        for i in range(rcfg.perturbations):
            p = draw(rcfg, seed, job.patient_id, i)
            out.append(PerturbedJob(job, p, perturbed_key(base_key, p)))
    out.sort(key=lambda j: (-j.base.voxels, j.base.patient_id, j.perturbation.index, j.base.sequence))
    return out


def extract_perturbed_all(jobs: list[PerturbedJob], cache: CaseCache, n_jobs: int, backend: str,
                          scheduler_address: str | None) -> tuple[list[dict], int]:
    """Results of every perturbed job, cache first, the rest on the case executor; and the cache hits."""
    from ..progress import progress

    results, todo = [], []
    for job in jobs:
        hit = cache.get(job.key)
        if hit is not None:
            results.append({**hit, "perturbation": job.perturbation.index, "cached": True})
        else:
            todo.append(job)
    n_hits = len(results)
    if todo:
        log.info("robustness: %d perturbed case(s) to extract (%d cached)", len(todo), n_hits)
    for res in progress(run_jobs(todo, n_jobs, backend, scheduler_address, fn=extract_perturbed), len(todo),
                        "robustness", "case", log):
        cache.put(res["key"], res)
        results.append({**res, "cached": False})
    return results, n_hits


def perturbed_values(results: list[dict], columns: list[str], sequences: tuple[str, ...], n: int
                     ) -> tuple[np.ndarray, list[str], list[str]]:
    """(patients, perturbations, features) array, NaN where a perturbation was left out; the patient ids
    and one warning per left-out (patient, perturbation)."""
    by: dict[tuple[str, int], dict[str, dict]] = {}
    warnings: list[str] = []
    failed: set[tuple[str, int]] = set()
    for r in results:
        k = (r["patient_id"], int(r["perturbation"]))
        if "error" in r:
            failed.add(k)
            warnings.append(r["error"])
        else:
            by.setdefault(k, {})[r["sequence"]] = r["features"]
    patients = sorted({pid for pid, _ in by} | {pid for pid, _ in failed})
    prefix = len(sequences) > 1
    X = np.full((len(patients), n, len(columns)), np.nan)
    col = {c: j for j, c in enumerate(columns)}
    for (pid, i), per_seq in by.items():
        if (pid, i) in failed or len(per_seq) < len(sequences):
            continue  # a perturbation counts only when every sequence of it was extracted
        row = X[patients.index(pid), i]
        for seq, feats in per_seq.items():
            for name, v in feats.items():
                j = col.get(f"{seq}_{name}" if prefix else name)
                if j is not None:
                    row[j] = float(v) if v is not None else np.nan
    return X, patients, warnings


def image_type(column: str, sequences: tuple[str, ...] = ()) -> str:
    """``original``, ``wavelet-LLL``, ``log-sigma-...`` (radiomics) or a feature family's name (``histogram``); ``t2w:`` prefixed with
    several sequences."""
    head, _, rest = column.partition("_")
    seq, name = (head, rest) if head in sequences else ("", column)
    family = family_of(name)
    kind = family.name if family is not None else name.split("_")[0]
    return f"{seq}:{kind}" if seq else kind


def robustness_table(X: np.ndarray, columns: list[str], feature_class: Callable[[str], str],
                     sequences: tuple[str, ...]) -> pd.DataFrame:
    """One row per feature: both ICCs with CIs, its class and image type, and the counts behind them."""
    res = icc(X)
    df = pd.DataFrame({"feature": columns, **{k: res[k] for k in COLUMNS[1:7]},
                       "feature_class": [feature_class(c) for c in columns],
                       "image_type": [image_type(c, sequences) for c in columns],
                       "n_patients": res["n_patients"], "n_complete": res["n_complete"],
                       "n_perturbations": X.shape[1]})
    return df[COLUMNS]


def run(cfg, base_jobs: list[CaseJob], cache: CaseCache, fit_patients: set[str], columns: list[str],
        feature_class: Callable[[str], str], out: Path) -> dict:
    """The feature stage's robustness step: perturbed extractions of the training patients -> ``out``
    (robustness.csv); returns facts for run.json."""
    from ..io import write_table

    fc, ex = cfg.features, cfg.execution
    t0 = time.perf_counter()
    jobs = perturbed_jobs(base_jobs, fit_patients, fc.robustness, cfg.run.seed)
    results, n_hits = extract_perturbed_all(jobs, cache, ex.workers, ex.backend, ex.scheduler_address)
    X, patients, warnings = perturbed_values(results, columns, fc.sequences, fc.robustness.perturbations)
    for w in warnings:
        log.warning("robustness: %s", w)
    table = robustness_table(X, columns, feature_class, fc.sequences if len(fc.sequences) > 1 else ())
    write_table(table, out)
    seconds = time.perf_counter() - t0
    kept = {t: float((table["icc1"] >= t).mean()) for t in (0.75, 0.9)}
    log.info("robustness: %d training patients x %d perturbations, %d feature(s): ICC(1,1) >= 0.75 for %.0f %%, "
             ">= 0.9 for %.0f %% (%.1f s, %d cached)", len(patients), fc.robustness.perturbations, len(columns),
             100 * kept[0.75], 100 * kept[0.9], seconds, n_hits)
    return {"robustness_patients": len(patients), "robustness_perturbations": fc.robustness.perturbations,
            "robustness_left_out": len(warnings), "robustness_cached": n_hits,
            "robustness_seconds": round(seconds, 2), "robustness_share_icc1_075": round(kept[0.75], 4),
            "robustness_share_icc1_090": round(kept[0.9], 4)}
