"""Dataset shift between a development cohort and an external one (issue 15, items 3-4).

Pure functions; ``cervirad evaluate`` calls them before it trusts any external number:

* :func:`fingerprint_shift` compares two fingerprints written by ``cervirad validate``
  (:func:`cervirad.validate.validate_cohort`): spacing, field of view, orientation, intensity
  percentiles, lesion volumes, class mix (classes unseen in development and classes absent
  externally are listed by name, never dropped).
* :func:`clinical_shift` compares the encoded clinical columns (``clin_*``) of two feature tables.
* :func:`feature_shift` ranks features by standardised mean difference, with the two-sample KS test.
* :func:`cervirad.shift_warnings.shift_warnings` condenses all of it into one line per kind, for the log and the
  report.

Every comparison is a row ``{"kind", "item", "development", "external", "shift", "flag"}`` (some
rows carry a few more keys, e.g. ``"unit"``, ``"development_range"``, ``"note"``). ``shift`` is a
relative change (``external / development - 1``) for sizes, a distance in development spreads for
intensities, a difference in proportions for the class mix and a standardised mean difference for
clinical variables and features.

Thresholds (a row is flagged when it crosses one; module constants, documented here):

* spacing and field of view: the external median differs from the development median by more
  than ``SIZE_REL`` (20 %) on an axis. Field of view = size x spacing per patient (mm), medians
  across patients (from the cohort-level medians when the fingerprint has no per-patient facts).
* orientation (only when the per-patient facts carry ``orientation`` or ``direction``; today's
  fingerprint does not record it and the rows are then absent): an orientation code seen
  externally but never in development, or a code's share differing by more than ``MIX_ABS``.
* intensity: for each of p0.5, p50 and p99.5, (external median - development median) divided by
  the development spread, flagged beyond ``INTENSITY_SPREADS`` (1). The spread is the
  IQR-equivalent SD (IQR / 1.349) of the per-patient percentile across development patients,
  floored at ``INTENSITY_RANGE_FLOOR`` (10 %) of the development dynamic range (median p99.5 -
  median p0.5) so that a very homogeneous development cohort does not flag noise. The dynamic
  range itself is also compared: flagged when the ratio leaves [1/``RANGE_RATIO``, ``RANGE_RATIO``]
  (1.5), i.e. another scanner's intensity scale.
* lesion volume: the external median outside [1/``RANGE_RATIO``, ``RANGE_RATIO``] x the
  development median, or outside the development [min, max].
* class mix: a class's proportion differs by more than ``MIX_ABS`` (0.15, absolute); a class
  present in development but absent externally, or present externally but unseen in
  development, is always flagged and named.
* clinical variables: |SMD| > ``SMD_FLAG`` (0.5), or more than ``OUTSIDE_FRACTION`` (10 %) plus
  the share expected by chance (2 / (n_dev + 1)) of external values outside the development
  [min, max].
* features: |SMD| > ``SMD_FLAG`` (0.5, a "medium" effect), or a KS p-value below 0.05 divided by
  the number of features compared (Bonferroni) with a KS statistic above ``KS_STAT`` (0.3).

Chance: a small external cohort differs from development by chance alone, so every threshold on
a sampled quantity is also raised to what chance gives at the two sample sizes: z x SE, where z is
the two-sided normal quantile at ``CHANCE_ALPHA`` (0.05) divided by the number of comparisons of
that kind (Bonferroni) and SE the standard error of the compared statistic under no shift (SMD:
sqrt(1/n_dev + 1/n_ext); a median: 1.25 x SD x sqrt(1/n_dev + 1/n_ext); a proportion p:
sqrt(p (1 - p) (1/n_dev + 1/n_ext))). Spacing and field of view are settings, not samples, and
use the fixed 20 %. Classes absent externally or unseen in development are always flagged.

SMD = (external mean - development mean) / pooled SD (the two sample variances weighted by n - 1);
0 when both samples are constant and equal, +-inf when they are constant and differ.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

SIZE_REL = 0.20
INTENSITY_SPREADS = 1.0
INTENSITY_RANGE_FLOOR = 0.10
RANGE_RATIO = 1.5
MIX_ABS = 0.15
SMD_FLAG = 0.5
KS_STAT = 0.3
KS_ALPHA = 0.05
CHANCE_ALPHA = 0.05
OUTSIDE_FRACTION = 0.10

AXES = ("x", "y", "z")  # image index axes, as SimpleITK orders spacing and size
PERCENTILES = (("p0_5", "p0.5"), ("p50", "p50"), ("p99_5", "p99.5"))


# --------------------------------------------------------------------------- small helpers
def to_float(v: Any) -> float:
    """``v`` as a float; NaN when it is not a number."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _rel(dev: float, ext: float) -> float:
    """external / development - 1 (NaN when undefined)."""
    if not (math.isfinite(dev) and math.isfinite(ext)) or dev == 0:
        return math.nan
    return ext / dev - 1.0


def _row(kind: str, item: str, dev: Any, ext: Any, shift: float, flag: bool, **extra) -> dict:
    row = {"kind": kind, "item": item, "development": dev, "external": ext,
           "shift": float(shift) if shift is not None else math.nan, "flag": bool(flag)}
    row.update(extra)
    return row


def _per_patient(fp: dict, seq: str, key: str) -> np.ndarray:
    """One per-patient fact of a sequence across the fingerprint's patients (finite values only)."""
    vals = [to_float((p.get(seq) or {}).get(key)) for p in fp.get("patients") or [] if isinstance(p.get(seq), dict)]
    a = np.asarray(vals, dtype=float)
    return a[np.isfinite(a)]


def _fov_per_axis(fp: dict, seq: str) -> list[float]:
    """Median field of view (mm) per image axis: size x spacing per patient, else from the medians."""
    fovs = []
    for p in fp.get("patients") or []:
        f = p.get(seq)
        if isinstance(f, dict) and f.get("size") and f.get("spacing"):
            fovs.append([to_float(n) * to_float(s) for n, s in zip(f["size"], f["spacing"])])
    if fovs:
        return np.nanmedian(np.asarray(fovs, dtype=float), axis=0).tolist()
    s = fp["sequences"][seq]
    size, spacing = s.get("size_median") or [], s.get("spacing_median") or []
    return [to_float(n) * to_float(sp) for n, sp in zip(size, spacing)]


def orientation_code(direction: Iterable[float]) -> str:
    """Three letters, one per image axis, naming where increasing index points (patient LPS
    frame of ITK/SimpleITK): the identity direction is ``"LPS"``, a sagittal stack e.g. ``"PSL"``."""
    d = np.asarray(list(direction), dtype=float)
    n = int(round(math.sqrt(d.size)))
    m = d.reshape(n, n)[:3, :3]
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    out = []
    for axis in range(m.shape[1]):
        col = m[:, axis]
        j = int(np.argmax(np.abs(col)))
        out.append(letters[j][0 if col[j] >= 0 else 1])
    return "".join(out)


def _orientations(fp: dict, seq: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in fp.get("patients") or []:
        f = p.get(seq)
        if not isinstance(f, dict):
            continue
        code = f.get("orientation")
        if code is None and f.get("direction") is not None:
            code = orientation_code(f["direction"])
        if code is not None:
            counts[str(code)] = counts.get(str(code), 0) + 1
    return counts


def _ratio(diff: float, scale: float) -> float:
    """diff / scale; 0 for no difference, +-inf for a difference over a zero scale, NaN if unknown."""
    if not math.isfinite(diff):
        return math.nan
    if scale > 0:
        return diff / scale
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def chance_z(n_tests: int = 1) -> float:
    """Two-sided normal quantile at CHANCE_ALPHA / n_tests (Bonferroni)."""
    return float(stats.norm.ppf(1 - CHANCE_ALPHA / (2 * max(1, n_tests))))


def _se_scale(nd: int, ne: int) -> float:
    """sqrt(1/n_dev + 1/n_ext); inf when a side has no sample (nothing is beyond chance then)."""
    return math.sqrt(1 / nd + 1 / ne) if nd > 0 and ne > 0 else math.inf


def _iqr_sd(a: np.ndarray) -> float:
    if a.size < 2:
        return 0.0
    q1, q3 = np.percentile(a, [25, 75])
    return float(q3 - q1) / 1.349


# --------------------------------------------------------------------------- fingerprints
def fingerprint_shift(dev: dict, ext: dict) -> list[dict]:
    """Rows comparing the development fingerprint ``dev`` with the external ``ext`` (see module doc)."""
    rows: list[dict] = []
    dseq, eseq = dev.get("sequences") or {}, ext.get("sequences") or {}
    for seq in dseq:
        if seq not in eseq:
            rows.append(_row("sequences", f"{seq} missing externally", "present", "absent", math.nan, True))
    for seq in eseq:
        if seq not in dseq:
            rows.append(_row("sequences", f"{seq} unseen in development", "absent", "present", math.nan, True))
    common = [s for s in dseq if s in eseq]

    for seq in common:  # spacing and field of view, per image axis
        d, e = dseq[seq], eseq[seq]
        for i, (ds, es) in enumerate(zip(d.get("spacing_median") or [], e.get("spacing_median") or [])):
            ds, es = to_float(ds), to_float(es)
            r = _rel(ds, es)
            rows.append(_row("spacing", f"{seq} spacing {AXES[i]}", ds, es, r, abs(r) > SIZE_REL, unit="mm",
                             development_range=[to_float((d.get("spacing_min") or [math.nan] * 3)[i]),
                                                to_float((d.get("spacing_max") or [math.nan] * 3)[i])],
                             external_range=[to_float((e.get("spacing_min") or [math.nan] * 3)[i]),
                                             to_float((e.get("spacing_max") or [math.nan] * 3)[i])]))
    for seq in common:
        for i, (df_, ef) in enumerate(zip(_fov_per_axis(dev, seq), _fov_per_axis(ext, seq))):
            r = _rel(df_, ef)
            rows.append(_row("field_of_view", f"{seq} field of view {AXES[i]}", round(df_, 2), round(ef, 2), r,
                             abs(r) > SIZE_REL, unit="mm"))
    for seq in common:
        do, eo = _orientations(dev, seq), _orientations(ext, seq)
        if not do or not eo:
            continue
        for code, pd_, pe, limit in _proportions(do, eo):
            unseen = code not in do
            rows.append(_row("orientation", f"{seq} stored {code}" + (" (unseen in development)" if unseen else ""),
                             round(pd_, 4), round(pe, 4), pe - pd_, unseen or abs(pe - pd_) > limit,
                             unit="proportion", threshold=limit))

    for seq in common:  # intensity percentiles in development spreads; the dynamic range as a ratio
        d, e = dseq[seq], eseq[seq]
        drange = to_float(d.get("intensity_p99_5_median")) - to_float(d.get("intensity_p0_5_median"))
        erange = to_float(e.get("intensity_p99_5_median")) - to_float(e.get("intensity_p0_5_median"))
        floor = INTENSITY_RANGE_FLOOR * abs(drange) if math.isfinite(drange) else 0.0
        limit = max(INTENSITY_SPREADS, chance_z(len(PERCENTILES)) * 1.25
                    * _se_scale(_n(dev, seq), _n(ext, seq)))
        for key, name in PERCENTILES:
            dv, ev = to_float(d.get(f"intensity_{key}_median")), to_float(e.get(f"intensity_{key}_median"))
            spread = max(_iqr_sd(_per_patient(dev, seq, key)), floor)
            dist = _ratio(ev - dv, spread)
            rows.append(_row("intensity", f"{seq} intensity {name}", dv, ev, dist, abs(dist) > limit,
                             unit="development spreads", development_spread=spread, threshold=limit))
        ratio = erange / drange if drange and math.isfinite(drange) and math.isfinite(erange) else math.nan
        rows.append(_row("intensity", f"{seq} intensity range p0.5-p99.5", drange, erange, _rel(drange, erange),
                         math.isfinite(ratio) and not (1 / RANGE_RATIO <= ratio <= RANGE_RATIO), unit="ratio - 1"))

    dl, el = dev.get("lesion_volume_ml") or {}, ext.get("lesion_volume_ml") or {}
    if dl and el:
        dm, em = to_float(dl.get("median")), to_float(el.get("median"))
        r = _rel(dm, em)
        outside = math.isfinite(em) and not (to_float(dl.get("min")) <= em <= to_float(dl.get("max")))
        log_ratio = math.log(em / dm) if dm > 0 and em > 0 else math.nan
        dlog = np.log(_lesions(dev))
        limit = max(math.log(RANGE_RATIO), chance_z() * 1.25 * _iqr_sd(dlog)
                    * _se_scale(int(dev.get("n_with_mask") or dlog.size), int(ext.get("n_with_mask") or 0)))
        rows.append(_row("lesion_volume", "lesion volume median", dm, em, r,
                         outside or (math.isfinite(log_ratio) and abs(log_ratio) > limit),
                         unit="ml", development_range=[to_float(dl.get("min")), to_float(dl.get("max"))],
                         external_range=[to_float(el.get("min")), to_float(el.get("max"))],
                         threshold=[math.exp(-limit), math.exp(limit)],
                         note="external median outside the development range" if outside else ""))

    rows += class_mix_shift(dev.get("class_counts") or {}, ext.get("class_counts") or {})
    rows.append(_row("cohort", "patients", dev.get("n_patients"), ext.get("n_patients"), math.nan, False))
    return rows


def class_mix_shift(dev_counts: dict, ext_counts: dict) -> list[dict]:
    """One row per class seen in either cohort: proportions, their difference, and explicit notes
    for a class absent externally or unseen in development (both always flagged)."""
    if not dev_counts or not ext_counts:
        return []
    dc = {str(k): int(v) for k, v in dev_counts.items() if int(v) > 0}
    ec = {str(k): int(v) for k, v in ext_counts.items() if int(v) > 0}
    rows = []
    for cls, pd_, pe, limit in _proportions(dc, ec):
        note = ""
        if cls not in ec:
            note = "present in development, absent externally"
        elif cls not in dc:
            note = "unseen in development: the classifier cannot predict it"
        rows.append(_row("class_mix", f"class {cls}" + (f" ({note})" if note else ""), round(pd_, 4), round(pe, 4),
                         pe - pd_, bool(note) or abs(pe - pd_) > limit, unit="proportion", threshold=limit,
                         counts=[dc.get(cls, 0), ec.get(cls, 0)], note=note))
    return rows


def _proportions(dc: dict[str, int], ec: dict[str, int]) -> list[tuple[str, float, float, float]]:
    """(category, development share, external share, flag threshold) per category of either."""
    nd, ne = sum(dc.values()), sum(ec.values())
    cats = sorted(set(dc) | set(ec), key=lambda c: (len(c), c))
    z = chance_z(len(cats))
    out = []
    for c in cats:
        pd_, pe = dc.get(c, 0) / nd if nd else math.nan, ec.get(c, 0) / ne if ne else math.nan
        pooled = (dc.get(c, 0) + ec.get(c, 0)) / (nd + ne) if nd + ne else 0.0
        out.append((c, pd_, pe, max(MIX_ABS, z * math.sqrt(pooled * (1 - pooled)) * _se_scale(nd, ne))))
    return out


def _n(fp: dict, seq: str) -> int:
    """Patients with facts for ``seq`` (else the fingerprint's patient count)."""
    n = sum(1 for p in fp.get("patients") or [] if isinstance(p.get(seq), dict))
    return n or int(fp.get("n_patients") or 0)


def _lesions(fp: dict) -> np.ndarray:
    a = np.asarray([to_float(p.get("lesion_ml")) for p in fp.get("patients") or []], dtype=float)
    return a[np.isfinite(a) & (a > 0)]


# --------------------------------------------------------------------------- tables
def _values(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.array([], dtype=float)
    a = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    return a[np.isfinite(a)]


def smd(dev: np.ndarray, ext: np.ndarray) -> float:
    """(ext mean - dev mean) / pooled SD; NaN when a sample is empty (see module doc)."""
    if dev.size == 0 or ext.size == 0:
        return math.nan
    diff = float(ext.mean() - dev.mean())
    dof = max(dev.size - 1, 0) + max(ext.size - 1, 0)
    ss = (float(dev.var(ddof=1)) * (dev.size - 1) if dev.size > 1 else 0.0) + \
         (float(ext.var(ddof=1)) * (ext.size - 1) if ext.size > 1 else 0.0)
    sd = math.sqrt(ss / dof) if dof else 0.0
    if sd > 1e-12 * max(1.0, abs(float(dev.mean())), abs(float(ext.mean()))):
        return diff / sd
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def clinical_shift(dev_table: pd.DataFrame, ext_table: pd.DataFrame, columns: list[str]) -> list[dict]:
    """One row per clinical column (encoded, numeric: the ``clin_*`` columns of the feature tables):
    means, ranges, missing fractions, SMD and the fraction of external values outside the
    development range. A column missing from one table is a flagged row, not an error."""
    rows = []
    z = chance_z(len(columns))
    for col in columns:
        d, e = _values(dev_table, col), _values(ext_table, col)
        nd, ne = len(dev_table), len(ext_table)
        miss = [round(1 - d.size / nd, 4) if nd else math.nan, round(1 - e.size / ne, 4) if ne else math.nan]
        if col not in dev_table.columns or col not in ext_table.columns:
            where = "development" if col not in dev_table.columns else "external"
            rows.append(_row("clinical", col, math.nan, math.nan, math.nan, True,
                             note=f"column absent in {where} table"))
            continue
        s = smd(d, e)
        limit = max(SMD_FLAG, z * _se_scale(d.size, e.size))
        outside = float(np.mean((e < d.min()) | (e > d.max()))) if d.size and e.size else math.nan
        flag = abs(s) > limit or (math.isfinite(outside) and outside > OUTSIDE_FRACTION + 2 / (d.size + 1))
        rows.append(_row("clinical", col, float(d.mean()) if d.size else math.nan,
                         float(e.mean()) if e.size else math.nan, s, flag, unit="SMD",
                         development_range=[float(d.min()), float(d.max())] if d.size else [math.nan, math.nan],
                         external_range=[float(e.min()), float(e.max())] if e.size else [math.nan, math.nan],
                         missing=miss, outside_development_range=outside, threshold=limit))
    return rows


def feature_shift(dev: pd.DataFrame, ext: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Per feature: SMD, KS statistic and p-value (scipy.stats.ks_2samp), medians, means, n and the
    flag; NaN values are dropped per feature; sorted by |SMD| descending (NaN last)."""
    out = []
    for f in features:
        d, e = _values(dev, f), _values(ext, f)
        s = smd(d, e)
        if d.size and e.size:
            ks = stats.ks_2samp(d, e)
            ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
        else:
            ks_stat = ks_p = math.nan
        out.append({"feature": f, "smd": s, "ks_stat": ks_stat, "ks_p": ks_p,
                    "dev_median": float(np.median(d)) if d.size else math.nan,
                    "ext_median": float(np.median(e)) if e.size else math.nan,
                    "dev_mean": float(d.mean()) if d.size else math.nan,
                    "ext_mean": float(e.mean()) if e.size else math.nan,
                    "n_dev": int(d.size), "n_ext": int(e.size)})
    cols = ["feature", "smd", "ks_stat", "ks_p", "dev_median", "ext_median", "dev_mean", "ext_mean", "n_dev",
            "n_ext", "threshold", "flag"]
    table = pd.DataFrame(out, columns=cols[:-2])
    if table.empty:
        return pd.DataFrame(columns=cols)
    alpha = KS_ALPHA / max(1, len(features))
    z = chance_z(len(features))
    table["threshold"] = [max(SMD_FLAG, z * _se_scale(a, b)) for a, b in zip(table["n_dev"], table["n_ext"])]
    big = table["smd"].abs() > table["threshold"]  # inf counts, NaN does not
    ks = (table["ks_p"] < alpha) & (table["ks_stat"] > KS_STAT)
    table["flag"] = (big | ks).fillna(False).astype(bool)
    order = table["smd"].abs().fillna(-1.0).sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index(drop=True)
