"""Synthetic demo cohort: pelvic-MRI-like volumes written in exactly the layout a user supplies.

Per patient: T2W (24 x 256 x 256, 0.7 x 0.7 x 4 mm), DWI (b=800) and ADC on a coarser
in-plane grid (24 x 128 x 128, 1.4 x 1.4 x 4 mm, as DWI is acquired in practice, so the
preprocess stage has real resampling to do), and a binary lesion mask on the T2W grid.
The lesion is one irregular blob of 1-4 cm near the cervix. Its appearance depends on the
three pathology bits, with patient-level variation so that classification is learnable but
not trivial:

- large cell (categories 4-7): larger lesion, slightly brighter on T2W and DWI;
- non-keratinizing: smoother texture (longer correlation length); keratinizing lesions are
  grainy and carry small dark foci (keratin pearls);
- adenocarcinoma: higher T2W signal (mucin) and higher ADC.

Category mix (paper: category 6 dominates, 4 and 7 are rarer): 6 40 %, 2 20 %, 0 16 %,
4 12 %, 7 12 % — at the default 100 patients every class has >= 8 training members, enough
for 5-fold CV with SMOTE. Deterministic per seed (same seed, same bytes).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from .io import write_image, write_table
from .rundir import write_json

CATEGORY_MIX = {6: 0.40, 2: 0.20, 0: 0.16, 4: 0.12, 7: 0.12}
SHAPE = (24, 256, 256)  # z, y, x
SPACING = (0.7, 0.7, 4.0)  # x, y, z (SimpleITK order)
FIGO = ["IB1", "IB2", "IB3", "IIA1", "IIA2", "IIB", "IIIA", "IIIB", "IIIC1", "IIIC2", "IVA"]
DEMO_VERSION = 1


def category_counts(n: int) -> dict[int, int]:
    """Exact per-category counts for ``n`` patients (largest-remainder rounding)."""
    raw = {k: n * f for k, f in CATEGORY_MIX.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / (f.std() + 1e-6)


def _ellipse(shape2d: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape2d[0], : shape2d[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lesion_mask(rng: np.random.Generator, diameter_mm: float, centre: tuple[float, float, float]) -> np.ndarray:
    """Irregular blob: an ellipsoid whose radius is modulated by low-order angular harmonics."""
    r_mm = diameter_mm / 2.0
    axes = r_mm * rng.uniform(0.8, 1.2, size=3)  # semi-axes in mm (z, y, x)
    spacing_zyx = (SPACING[2], SPACING[1], SPACING[0])
    lo = [max(0, int(np.floor(c - 1.5 * a / s))) for c, a, s in zip(centre, axes, spacing_zyx)]
    hi = [min(n, int(np.ceil(c + 1.5 * a / s)) + 1) for c, a, s, n in zip(centre, axes, spacing_zyx, SHAPE)]
    z, y, x = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
    uz = (z - centre[0]) * spacing_zyx[0] / axes[0]
    uy = (y - centre[1]) * spacing_zyx[1] / axes[1]
    ux = (x - centre[2]) * spacing_zyx[2] / axes[2]
    rho = np.sqrt(uz ** 2 + uy ** 2 + ux ** 2)
    theta = np.arctan2(uy, ux)
    phi = np.arccos(np.clip(uz / np.maximum(rho, 1e-6), -1, 1))
    wobble = sum(rng.uniform(0.04, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                 * np.cos((k - 1) * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    box = rho <= 1.0 + wobble
    if box.sum() > 50:
        box = ndimage.binary_opening(box, iterations=1)
    if not box.any():  # degenerate draw: fall back to the plain ellipsoid
        box = rho <= 1.0
    mask = np.zeros(SHAPE, bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box
    return mask


def _bias_field(rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field (about +-8 %) from a few low-frequency cosines."""
    z, y, x = (np.linspace(0, np.pi, n, dtype=np.float32) for n in SHAPE)
    f = np.ones(SHAPE, np.float32)
    for _ in range(3):
        k = rng.uniform(0.3, 1.2, size=3)
        p = rng.uniform(0, 2 * np.pi, size=3)
        f += 0.03 * (np.cos(k[0] * z + p[0])[:, None, None] * np.cos(k[1] * y + p[1])[None, :, None]
                     * np.cos(k[2] * x + p[2])[None, None, :])
    return f


def _patient_volumes(rng: np.random.Generator, category: int) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    large, nonker, adeno = (category >> 2) & 1, (category >> 1) & 1, category & 1
    nz, ny, nx = SHAPE
    cy, cx = ny / 2 + rng.normal(0, 4), nx / 2 + rng.normal(0, 4)
    body2d = _ellipse((ny, nx), cy, cx, rng.uniform(80, 92), rng.uniform(112, 122))
    fat2d = body2d & ~_ellipse((ny, nx), cy, cx, rng.uniform(66, 76), rng.uniform(96, 106))
    bladder2d = _ellipse((ny, nx), cy - 42, cx + rng.normal(0, 3), rng.uniform(16, 24), rng.uniform(26, 34))
    rectum2d = _ellipse((ny, nx), cy + 45, cx, 10, 12)
    bones2d = _ellipse((ny, nx), cy + 10, cx - 70, 20, 12) | _ellipse((ny, nx), cy + 10, cx + 70, 20, 12)
    zz = np.arange(nz)[:, None, None]
    slab = (zz >= 1) & (zz <= nz - 2)
    body, fat = body2d[None] & slab, fat2d[None] & slab
    bladder = bladder2d[None] & (zz >= 6) & (zz <= nz - 4)

    diameter = float(np.clip(rng.normal(29 if large else 19, 5), 10, 40))
    centre = (nz / 2 + rng.normal(0, 1.5), cy + rng.normal(0, 5), cx + rng.normal(0, 6))
    lesion = _lesion_mask(rng, diameter, centre) & body
    zs, ys, xs = (slice(max(0, a.min() - 6), b.max() + 7) for a, b in zip(np.nonzero(lesion), np.nonzero(lesion)))
    box = (zs, ys, xs)
    cervix = np.zeros(SHAPE, bool)
    cervix[box] = ndimage.binary_dilation(lesion[box], iterations=4) & ~lesion[box] & body[box]

    t2 = np.zeros(SHAPE, np.float32)
    t2[body] = 260.0
    t2[fat] = 620.0
    t2[np.broadcast_to(bones2d, SHAPE) & body] = 170.0
    t2[np.broadcast_to(rectum2d, SHAPE) & body] = 150.0
    t2[bladder] = 950.0
    t2[cervix] = 190.0

    corr = rng.uniform(2.0, 3.0) if nonker else rng.uniform(0.6, 1.1)  # texture correlation length (px)
    texture = np.zeros(SHAPE, np.float32)
    texture[box] = _smooth_noise(rng, t2[box].shape, (0.5, corr, corr))
    lesion_mean = 430 + 45 * large + 80 * adeno + rng.normal(0, 35)
    t2[lesion] = lesion_mean + (55 + rng.normal(0, 8)) * texture[lesion]
    if not nonker:  # keratin pearls: small dark foci
        pearls = np.zeros(SHAPE, bool)
        pearls[box] = ndimage.binary_dilation((rng.random(t2[box].shape) < 0.01) & lesion[box], iterations=1)
        t2[pearls & lesion] -= 150.0

    dwi = np.where(body, 110.0, 5.0).astype(np.float32)
    dwi[bladder] = 40.0
    dwi[lesion] = 380 + 40 * large - 30 * adeno + rng.normal(0, 30) + 40 * texture[lesion]
    adc = np.where(body, 1500.0, 0.0).astype(np.float32)
    adc[bladder] = 2900.0
    adc[lesion] = 820 + 180 * adeno - 60 * large + rng.normal(0, 70) + 60 * texture[lesion]

    field = _bias_field(rng)
    t2 = ndimage.gaussian_filter(t2 * field, (0, 0.8, 0.8)) + rng.normal(0, 8, SHAPE).astype(np.float32) * body
    dwi, adc = _downsample(dwi * field), _downsample(adc)
    small_body = _downsample(body.astype(np.float32)) > 0.5
    dwi = dwi + rng.normal(0, 6, dwi.shape) * small_body
    adc = adc + rng.normal(0, 40, adc.shape) * small_body
    vols = {"t2w": np.clip(t2, 0, None), "dwi": np.clip(dwi, 0, None), "adc": np.clip(adc, 0, None)}
    return {k: np.round(v).astype(np.int16) for k, v in vols.items()}, lesion.astype(np.uint8), diameter


def _downsample(a: np.ndarray) -> np.ndarray:
    z, y, x = a.shape
    return a.reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4))


def _image(arr: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-arr.shape[2] * spacing[0] / 2, -arr.shape[1] * spacing[1] / 2, -arr.shape[0] * spacing[2] / 2))
    return img


def _clinical_row(rng: np.random.Generator, pid: str, category: int, diameter: float) -> dict:
    large, nonker, adeno = (category >> 2) & 1, (category >> 1) & 1, category & 1
    stage_idx = int(np.clip(round((diameter - 10) / 30 * 6 + rng.normal(0, 1.6)), 0, len(FIGO) - 1))
    lnm = int(rng.random() < 0.15 + 0.04 * stage_idx)
    return {
        "patient_id": pid,
        "age": int(np.clip(rng.normal(52 - 4 * adeno, 10), 25, 82)),
        "hpv_status": "positive" if rng.random() < (0.6 if adeno else 0.88) else "negative",
        "figo_stage": FIGO[stage_idx],
        "lymph_node_metastasis": lnm,
        "lymphovascular_invasion": int(rng.random() < 0.2 + 0.3 * lnm),
        "invasion_depth_cm": round(float(np.clip(diameter / 10 * rng.uniform(0.5, 0.9), 0.3, 4.0)), 2),
        "chemotherapy": int(rng.random() < 0.3 + 0.06 * stage_idx),
        "radiotherapy": int(rng.random() < 0.4 + 0.05 * stage_idx),
        "large_cell": large,
        "non_keratinizing": nonker,
        "adenocarcinoma": adeno,
    }


def write_demo_cohort(out: str | Path, patients: int = 100, seed: int = 7) -> tuple[Path, Path]:
    """Write the demo cohort to ``out``; returns (manifest.csv, clinical.csv)."""
    if patients < 10:
        from .errors import InputError

        raise InputError(f"Demo cohort size {patients} is too small; use --patients 10 or more "
                         "(every category needs members in each split).")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cats = np.concatenate([[k] * v for k, v in category_counts(patients).items()])
    rng.shuffle(cats)
    manifest, clinical = [], []
    for i, cat in enumerate(cats):
        pid = f"CX{i + 1:03d}"
        prng = np.random.default_rng([seed, i])
        vols, mask, diameter = _patient_volumes(prng, int(cat))
        row = {"patient_id": pid}
        for seq, arr in vols.items():
            spacing = SPACING if seq == "t2w" else (SPACING[0] * 2, SPACING[1] * 2, SPACING[2])
            rel = f"images/{pid}_{seq}.nii.gz"
            write_image(_image(arr, spacing), out / rel)
            row[seq] = rel
        write_image(_image(mask, SPACING), out / f"images/{pid}_mask.nii.gz")
        row["mask"] = f"images/{pid}_mask.nii.gz"
        manifest.append(row)
        clinical.append(_clinical_row(prng, pid, int(cat), diameter))
    m_path, c_path = out / "manifest.csv", out / "clinical.csv"
    write_table(pd.DataFrame(clinical), c_path)
    write_table(pd.DataFrame(manifest), m_path)
    write_json(out / "demo.json", {"patients": patients, "seed": seed, "version": DEMO_VERSION})
    return m_path, c_path


def ensure_demo_cohort(out: str | Path, patients: int, seed: int) -> tuple[Path, Path]:
    """Reuse the demo cohort in ``out`` when it was written with the same settings."""
    out = Path(out)
    stamp = out / "demo.json"
    want = {"patients": patients, "seed": seed, "version": DEMO_VERSION}
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == want:
        return out / "manifest.csv", out / "clinical.csv"
    return write_demo_cohort(out, patients, seed)
