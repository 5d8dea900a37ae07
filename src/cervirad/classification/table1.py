"""Table 1: baseline characteristics per split and per class, with 95 % confidence intervals.

Input: the classify stage's feature table (one row per patient: the label, the split and the
encoded clinical columns ``clin_<variable>`` of :mod:`cervirad.features.clinical`). Groups: all
patients, the fitting patients (``train`` + ``val`` of splits.json: classification fits on both),
the ``test`` patients, and each class of the label.

Rows (``table1.csv``, one row per variable x level x group; ``n_group`` = the group's patients):

* categorical variables (HPV, nodes, LVSI, chemo-/radiotherapy: 1 = yes / positive; FIGO stage grouped
  into its main stages I-IV from the FIGO 2018 rank: I = 1-5, II = 6-8, III = 9-12, IV = 13-14):
  per level the count, its percentage of ``n_group`` and the Wilson score 95 % interval of that
  proportion (:func:`wilson`);
* continuous variables (age in years, invasion depth in cm): median, first and third quartile of
  the non-missing values, and a percentile-bootstrap 95 % interval of the median (``n_boot``
  resamples of those values, seeded);
* every variable: a ``missing`` row (count, percentage, Wilson interval) - missing values are
  counted, never imputed here.

:func:`write_table1` writes it for a run's split and returns its ``table1_*`` keys for metrics.json.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..features.clinical import VARIABLES
from ..io import write_table
from ..layout import TABLE1
from ..pathology import LABEL
from ..splits import split_of

Z = 1.959963984540054  # standard normal 97.5 % quantile
CONTINUOUS = ("age", "invasion_depth_cm")
FIGO_GROUPS = (("I", 1, 5), ("II", 6, 8), ("III", 9, 12), ("IV", 13, 14))
LEVELS = {"hpv_status": ("positive", "negative")}
COLUMNS = ["variable", "level", "group", "n_group", "count", "percent", "median", "q1", "q3", "ci_low", "ci_high",
           "ci_method"]


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (NaN for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def median_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of the median (NaN without values or resamples)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return float(lo), float(hi)


def _levels(var: str, x: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(level name, member mask) of a categorical variable's non-missing values."""
    if var == "figo_stage":
        return [(name, ((x >= lo) & (x < hi + 1)).to_numpy()) for name, lo, hi in FIGO_GROUPS]
    yes, no = LEVELS.get(var, ("yes", "no"))
    return [(yes, (x == 1).to_numpy()), (no, (x == 0).to_numpy())]


def _rows_for(var: str, x: pd.Series, group: str, n_boot: int, seed: int) -> list[dict]:
    n = len(x)
    base = {"variable": var, "group": group, "n_group": n}
    rows = []
    if var in CONTINUOUS:
        v = x.dropna().to_numpy(dtype=float)
        med, q1, q3 = (np.percentile(v, [50, 25, 75]) if len(v) else (np.nan,) * 3)
        lo, hi = median_ci(v, n_boot, seed)
        rows.append({**base, "level": "median [IQR]", "count": len(v), "median": med, "q1": q1, "q3": q3,
                     "ci_low": lo, "ci_high": hi, "ci_method": f"bootstrap of the median ({n_boot})"})
    else:
        for level, member in _levels(var, x):
            k = int(member.sum())
            lo, hi = wilson(k, n)
            rows.append({**base, "level": level, "count": k, "percent": 100 * k / n if n else np.nan,
                         "ci_low": 100 * lo, "ci_high": 100 * hi, "ci_method": "Wilson (percent)"})
    k = int(x.isna().sum())
    lo, hi = wilson(k, n)
    rows.append({**base, "level": "missing", "count": k, "percent": 100 * k / n if n else np.nan,
                 "ci_low": 100 * lo, "ci_high": 100 * hi, "ci_method": "Wilson (percent)"})
    return rows


def groups_of(labels: pd.Series, parts: pd.Series) -> dict[str, np.ndarray]:
    """Row masks of the Table 1 groups: all, train+val, test, then one per class label."""
    out = {"all": np.ones(len(labels), dtype=bool),
           "train+val": parts.isin(["train", "val"]).to_numpy(), "test": (parts == "test").to_numpy()}
    for c in sorted(labels.unique(), key=lambda v: (str(type(v)), v)):
        out[f"class {c}"] = (labels == c).to_numpy()
    return out


def table1(df: pd.DataFrame, label: str, parts: pd.Series, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The long Table 1 (module docstring) of the ``clin_*`` columns present in ``df``; empty when none are."""
    present = [v for v in VARIABLES if f"clin_{v}" in df.columns]
    rows = []
    for group, mask in groups_of(df[label].reset_index(drop=True), parts.reset_index(drop=True)).items():
        for i, var in enumerate(present):
            x = df[f"clin_{var}"].reset_index(drop=True)[mask].astype(float)
            rows += _rows_for(var, x, group, n_boot, seed + i)
    return pd.DataFrame(rows, columns=COLUMNS).round(6)


def display(t1: pd.DataFrame) -> pd.DataFrame:
    """Wide text version for the report: one row per variable/level, one column per group."""
    if t1.empty:
        return t1

    def cell(r) -> str:
        if r["level"] == "median [IQR]":
            if r["count"] == 0:
                return "–"
            ci = "" if pd.isna(r["ci_low"]) else f" (95 % CI {r['ci_low']:.3g}–{r['ci_high']:.3g})"
            return f"{r['median']:.3g} [{r['q1']:.3g}–{r['q3']:.3g}]{ci}"
        return f"{int(r['count'])} ({r['percent']:.0f} %) [{r['ci_low']:.0f}–{r['ci_high']:.0f}]"

    t = t1.assign(cell=t1.apply(cell, axis=1))
    groups = list(dict.fromkeys(t["group"]))
    n = t.groupby("group", sort=False)["n_group"].first()
    keys = list(dict.fromkeys(zip(t["variable"], t["level"])))
    cells = {(r.variable, r.level, r.group): r.cell for r in t.itertuples()}
    return pd.DataFrame([[v, lv] + [cells.get((v, lv, g), "") for g in groups] for v, lv in keys],
                        columns=["variable", "level"] + [f"{g} (n={n[g]})" for g in groups])


def write_table1(out: Path, cfg, df: pd.DataFrame, splits: dict, id_column: str = "patient_id") -> dict:
    """Table 1 of the feature table's patients in ``splits`` -> ``out/table1.csv`` (nothing when the table has
    no clinical column); returns metrics.json's ``table1_file`` and ``table1_groups`` (empty when not written)."""
    part_of = split_of(splits)
    rows = df[df[id_column].astype(str).isin(part_of)]
    t1 = table1(rows, LABEL, rows[id_column].astype(str).map(part_of), cfg.classification.bootstrap, cfg.run.seed)
    if t1.empty:
        return {}
    write_table(t1, out / TABLE1)
    return {"table1_file": TABLE1, "table1_groups": t1.groupby("group", sort=False)["n_group"].first().to_dict()}
