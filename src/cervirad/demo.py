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

Two sites (``cervirad demo-data --site A|B``). Site A (the default) is the development cohort
described above (ids ``CX001``...). Site B simulates a second hospital, for external validation
(``cervirad evaluate``); the anatomy and lesion biology are the same in millimetres, the scanner,
protocol and case mix are not:

- ids ``EX001``..., and its own random streams (site B never repeats a site-A patient);
- T2W voxel 0.5 x 0.5 x 3.0 mm on a 32 x 360 x 360 grid (about the same 180 x 180 x 96 mm field
  of view as site A's 0.7 x 0.7 x 4.0 mm, 24 x 256 x 256); DWI/ADC 1.0 x 1.0 x 3.0 mm,
  32 x 180 x 180. Structures, lesion positions and texture correlation lengths are scaled so
  they keep their physical size;
- another scanner's intensities: T2W x 1.6 + 40, DWI x 0.75 + 15, ADC x 1.1 + 30 (the offset
  applies to the whole volume, background included), after twice site A's noise (T2W sd 16,
  DWI sd 12, ADC sd 80 in site-A units);
- every third patient (the 2nd, 5th, 8th, ...) has T2W and its mask stored sagittally (axes
  permuted and flipped: the same physical image, another storage order and direction); DWI and
  ADC stay axial, so the sequences of one patient lie on differently oriented grids;
- class mix 0 25 %, 6 25 %, 7 20 %, 2 15 %, 4 15 % (same five categories, fewer of category 6).

Two scanners in one hospital (``demo-data --scanners 2``, ``data.demo_scanners: 2``; issue 24): site A's
cohort where some patients were scanned on a second machine, and a ``scanner`` column in the clinical
table (``Siemens Skyra 3T`` / ``Philips Ingenia 3T``, the paper's two). The category order and every
first-scanner patient are exactly those of the one-scanner cohort (the scanner is drawn from a random
stream of its own); a second-scanner patient has the same anatomy and lesion biology in millimetres
but T2W voxels of 0.9 x 0.9 x 4.8 mm (20 x 200 x 200, the same field of view; DWI/ADC 1.8 x 1.8 x 4.8
mm), 2.2 x site A's noise and another intensity calibration (T2W x 1.35 + 40, DWI x 0.8 + 15, ADC x 1.15
+ 30; the offset applies to the whole volume, background included). The share of
patients on the second scanner depends on the category (0: 70 %, 2: 60 %, 7: 50 %, 4: 30 %,
6: 25 %; about 43 % overall), so scanner and class are confounded, as in real multi-scanner cohorts.
The default (one scanner) writes the same bytes as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from .io import write_image, write_table
from .files import read_json, write_json

CATEGORY_MIX = {6: 0.40, 2: 0.20, 0: 0.16, 4: 0.12, 7: 0.12}
SHAPE = (24, 256, 256)  # z, y, x
SPACING = (0.7, 0.7, 4.0)  # x, y, z (SimpleITK order)
FIGO = ["IB1", "IB2", "IB3", "IIA1", "IIA2", "IIB", "IIIA", "IIIB", "IIIC1", "IIIC2", "IVA"]
DEMO_VERSION = 1
# the files of a demo cohort folder (demo-data --out, or <run>/cohort); demo.json stamps it as written by demo-data
MANIFEST, CLINICAL, STAMP = "manifest.csv", "clinical.csv", "demo.json"


@dataclass(frozen=True)
class Site:
    """What differs between the synthetic hospitals (site A's values reproduce the original demo)."""

    prefix: str
    category_mix: dict[int, float]
    shape: tuple[int, int, int]  # T2W grid, z, y, x
    spacing: tuple[float, float, float]  # T2W voxel, x, y, z (SimpleITK order)
    scale: dict[str, float]  # scanner intensity scale per sequence
    offset: dict[str, float]  # and offset, added to the whole volume
    noise: float  # multiplier on site A's noise
    sagittal_every: int  # store T2W + mask sagittally for patient i with i % n == 1 (0: never)
    stream: tuple[int, ...]  # appended to the seed so each site has its own random streams


SITES = {
    "A": Site("CX", CATEGORY_MIX, SHAPE, SPACING, {"t2w": 1.0, "dwi": 1.0, "adc": 1.0},
              {"t2w": 0.0, "dwi": 0.0, "adc": 0.0}, 1.0, 0, ()),
    "B": Site("EX", {0: 0.25, 6: 0.25, 7: 0.20, 2: 0.15, 4: 0.15}, (32, 360, 360), (0.5, 0.5, 3.0),
              {"t2w": 1.6, "dwi": 0.75, "adc": 1.1}, {"t2w": 40.0, "dwi": 15.0, "adc": 30.0}, 2.0, 3, (1,)),
}


# the second scanner of site A (demo_scanners: 2): another resolution, noise and calibration
SCANNER_2 = Site("CX", CATEGORY_MIX, (20, 200, 200), (0.9, 0.9, 4.8), {"t2w": 1.35, "dwi": 0.8, "adc": 1.15},
                 {"t2w": 40.0, "dwi": 15.0, "adc": 30.0}, 2.2, 0, ())
SCANNER_NAMES = ("Siemens Skyra 3T", "Philips Ingenia 3T")
SECOND_SCANNER_SHARE = {0: 0.70, 2: 0.60, 7: 0.50, 4: 0.30, 6: 0.25}  # by category: the class mix differs


def scanner_of(cats: np.ndarray, seed: int) -> np.ndarray:
    """0 (first scanner) or 1 (second) per patient, from a random stream of its own."""
    rng = np.random.default_rng([seed, 24])
    return (rng.random(len(cats)) < np.array([SECOND_SCANNER_SHARE[int(c)] for c in cats])).astype(int)


def _site(site: str) -> Site:
    if site not in SITES:
        from .errors import InputError

        raise InputError(f"Unknown demo site '{site}'; choose one of {', '.join(SITES)}.")
    return SITES[site]


def category_counts(n: int, site: str = "A") -> dict[int, int]:
    """Exact per-category counts for ``n`` patients (largest-remainder rounding)."""
    raw = {k: n * f for k, f in _site(site).category_mix.items()}
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


def _lesion_mask(rng: np.random.Generator, diameter_mm: float, centre: tuple[float, float, float],
                 site: Site) -> np.ndarray:
    """Irregular blob: an ellipsoid whose radius is modulated by low-order angular harmonics."""
    SHAPE, SPACING = site.shape, site.spacing
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


def _bias_field(rng: np.random.Generator, SHAPE: tuple[int, int, int]) -> np.ndarray:
    """Smooth multiplicative field (about +-8 %) from a few low-frequency cosines."""
    z, y, x = (np.linspace(0, np.pi, n, dtype=np.float32) for n in SHAPE)
    f = np.ones(SHAPE, np.float32)
    for _ in range(3):
        k = rng.uniform(0.3, 1.2, size=3)
        p = rng.uniform(0, 2 * np.pi, size=3)
        f += 0.03 * (np.cos(k[0] * z + p[0])[:, None, None] * np.cos(k[1] * y + p[1])[None, :, None]
                     * np.cos(k[2] * x + p[2])[None, None, :])
    return f


def _patient_volumes(rng: np.random.Generator, category: int,
                     site: Site = SITES["A"]) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    large, nonker, adeno = (category >> 2) & 1, (category >> 1) & 1, category & 1
    SHAPE = site.shape
    nz, ny, nx = SHAPE
    # lengths below are in site-A voxels (0.7 mm in-plane, 4 mm slices); s and sz scale them to
    # this site's voxels so the anatomy keeps its size in mm (both are exactly 1.0 for site A)
    s, sz = SPACING[0] / site.spacing[0], SPACING[2] / site.spacing[2]
    cy, cx = ny / 2 + rng.normal(0, 4) * s, nx / 2 + rng.normal(0, 4) * s
    body2d = _ellipse((ny, nx), cy, cx, rng.uniform(80, 92) * s, rng.uniform(112, 122) * s)
    fat2d = body2d & ~_ellipse((ny, nx), cy, cx, rng.uniform(66, 76) * s, rng.uniform(96, 106) * s)
    bladder2d = _ellipse((ny, nx), cy - 42 * s, cx + rng.normal(0, 3) * s, rng.uniform(16, 24) * s,
                         rng.uniform(26, 34) * s)
    rectum2d = _ellipse((ny, nx), cy + 45 * s, cx, 10 * s, 12 * s)
    bones2d = (_ellipse((ny, nx), cy + 10 * s, cx - 70 * s, 20 * s, 12 * s)
               | _ellipse((ny, nx), cy + 10 * s, cx + 70 * s, 20 * s, 12 * s))
    zz = np.arange(nz)[:, None, None]
    slab = (zz >= round(1 * sz)) & (zz <= nz - 1 - round(1 * sz))
    body, fat = body2d[None] & slab, fat2d[None] & slab
    bladder = bladder2d[None] & (zz >= round(6 * sz)) & (zz <= nz - round(4 * sz))

    diameter = float(np.clip(rng.normal(29 if large else 19, 5), 10, 40))
    centre = (nz / 2 + rng.normal(0, 1.5) * sz, cy + rng.normal(0, 5) * s, cx + rng.normal(0, 6) * s)
    lesion = _lesion_mask(rng, diameter, centre, site) & body
    pad = [round(6 * f) for f in (sz, s, s)]
    zs, ys, xs = (slice(max(0, a.min() - p), b.max() + p + 1)
                  for a, b, p in zip(np.nonzero(lesion), np.nonzero(lesion), pad))
    box = (zs, ys, xs)
    cervix = np.zeros(SHAPE, bool)
    cervix[box] = ndimage.binary_dilation(lesion[box], iterations=round(4 * s)) & ~lesion[box] & body[box]

    t2 = np.zeros(SHAPE, np.float32)
    t2[body] = 260.0
    t2[fat] = 620.0
    t2[np.broadcast_to(bones2d, SHAPE) & body] = 170.0
    t2[np.broadcast_to(rectum2d, SHAPE) & body] = 150.0
    t2[bladder] = 950.0
    t2[cervix] = 190.0

    corr = rng.uniform(2.0, 3.0) if nonker else rng.uniform(0.6, 1.1)  # texture correlation length (px)
    texture = np.zeros(SHAPE, np.float32)
    texture[box] = _smooth_noise(rng, t2[box].shape, (0.5 * sz, corr * s, corr * s))
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

    field = _bias_field(rng, SHAPE)
    n = site.noise
    t2 = (ndimage.gaussian_filter(t2 * field, (0, 0.8, 0.8))
          + rng.normal(0, 8 * n, SHAPE).astype(np.float32) * body)
    dwi, adc = _downsample(dwi * field), _downsample(adc)
    small_body = _downsample(body.astype(np.float32)) > 0.5
    dwi = dwi + rng.normal(0, 6 * n, dwi.shape) * small_body
    adc = adc + rng.normal(0, 40 * n, adc.shape) * small_body
    vols = {"t2w": np.clip(t2, 0, None), "dwi": np.clip(dwi, 0, None), "adc": np.clip(adc, 0, None)}
    if site.scale != SITES["A"].scale or site.offset != SITES["A"].offset:  # another scanner's calibration
        vols = {k: v * site.scale[k] + site.offset[k] for k, v in vols.items()}
    return {k: np.round(v).astype(np.int16) for k, v in vols.items()}, lesion.astype(np.uint8), diameter


def _downsample(a: np.ndarray) -> np.ndarray:
    z, y, x = a.shape
    return a.reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4))


def _image(arr: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-arr.shape[2] * spacing[0] / 2, -arr.shape[1] * spacing[1] / 2, -arr.shape[0] * spacing[2] / 2))
    return img


def stored_sagittally(img: sitk.Image) -> sitk.Image:
    """The same physical image stored sagittally: axes permuted and two of them flipped."""
    return sitk.Flip(sitk.PermuteAxes(img, [1, 2, 0]), [True, False, True])


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


def write_demo_cohort(out: str | Path, patients: int = 100, seed: int = 7, site: str = "A",
                      scanners: int = 1) -> tuple[Path, Path]:
    """Write the demo cohort of ``site`` (A: development, B: external) to ``out``, on one scanner or
    (site A only) two; returns (manifest.csv, clinical.csv)."""
    st = _site(site)
    if scanners not in (1, 2) or (scanners == 2 and site != "A"):
        from .errors import InputError

        raise InputError(f"Demo scanners {scanners} for site {site}: use 1, or 2 with site A (site B is one other "
                         "hospital's scanner).")
    if patients < 10:
        from .errors import InputError

        raise InputError(f"Demo cohort size {patients} is too small; use --patients 10 or more "
                         "(every category needs members in each split).")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, *st.stream] if st.stream else seed)
    cats = np.concatenate([[k] * v for k, v in category_counts(patients, site).items()])
    rng.shuffle(cats)
    on = scanner_of(cats, seed) if scanners == 2 else np.zeros(len(cats), dtype=int)
    manifest, clinical = [], []
    for i, cat in enumerate(cats):
        pid = f"{st.prefix}{i + 1:03d}"
        prng = np.random.default_rng([seed, i, *st.stream])
        pst = SCANNER_2 if on[i] else st
        sp = pst.spacing
        vols, mask, diameter = _patient_volumes(prng, int(cat), pst)
        sagittal = st.sagittal_every > 0 and i % st.sagittal_every == 1
        row = {"patient_id": pid}
        for seq, arr in vols.items():
            img = _image(arr, sp if seq == "t2w" else (sp[0] * 2, sp[1] * 2, sp[2]))
            if sagittal and seq == "t2w":
                img = stored_sagittally(img)
            rel = f"images/{pid}_{seq}.nii.gz"
            write_image(img, out / rel)
            row[seq] = rel
        mask_img = _image(mask, sp)  # stored like its T2W, so their geometry matches
        write_image(stored_sagittally(mask_img) if sagittal else mask_img, out / f"images/{pid}_mask.nii.gz")
        row["mask"] = f"images/{pid}_mask.nii.gz"
        manifest.append(row)
        clinical.append(_clinical_row(prng, pid, int(cat), diameter))
        if scanners == 2:
            clinical[-1]["scanner"] = SCANNER_NAMES[on[i]]
    m_path, c_path = out / MANIFEST, out / CLINICAL
    write_table(pd.DataFrame(clinical), c_path)
    write_table(pd.DataFrame(manifest), m_path)
    write_json(out / STAMP, _stamp(patients, seed, site, scanners))
    return m_path, c_path


def _stamp(patients: int, seed: int, site: str, scanners: int) -> dict:
    """The stamp (``scanners`` only when 2, so the one-scanner stamp is unchanged)."""
    return {"patients": patients, "seed": seed, "version": DEMO_VERSION, "site": site,
            **({"scanners": scanners} if scanners != 1 else {})}


def ensure_demo_cohort(out: str | Path, patients: int, seed: int, site: str = "A",
                       scanners: int = 1) -> tuple[Path, Path]:
    """Reuse the demo cohort in ``out`` when it was written with the same settings (a stamp
    without a site predates sites and is site A)."""
    out = Path(out)
    stamp = out / STAMP
    want = _stamp(patients, seed, site, scanners)
    if stamp.is_file():
        try:
            have = read_json(stamp)
        except ValueError:
            have = None
        if isinstance(have, dict) and {"site": "A", **have} == want:
            return out / MANIFEST, out / CLINICAL
    return write_demo_cohort(out, patients, seed, site, scanners)
