"""The rows of :mod:`cervirad.shift` condensed into one warning line per kind of shift, for the log and the
report (development value first, then external; the largest shifts named)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .shift import SMD_FLAG, to_float

KIND_ORDER = ("sequences", "spacing", "field_of_view", "orientation", "intensity", "lesion_volume",
              "class_mix", "clinical", "features")
KIND_TITLE = {"field_of_view": "field of view", "lesion_volume": "lesion volume", "class_mix": "class mix"}


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    f = to_float(v)
    if math.isnan(f):
        return "n/a" if v is None or isinstance(v, float) else str(v)
    if math.isfinite(f) and abs(f) >= 1000:
        return f"{f:.0f}"
    return f"{f:.3g}"  # inf -> "inf"


def _describe(row: dict) -> str:
    kind, unit = row["kind"], row.get("unit", "")
    d, e, s = row["development"], row["external"], row["shift"]
    if kind in ("spacing", "field_of_view", "lesion_volume"):
        pct = f" ({s * 100:+.0f} %)" if math.isfinite(s) else ""
        return f"{row['item']} {_fmt(d)} vs {_fmt(e)} {unit}{pct}"
    if kind == "intensity":
        if row["item"].endswith("range p0.5-p99.5"):
            ratio = f" (x{_fmt(e / d)})" if isinstance(d, float) and d and math.isfinite(d) else ""
            return f"{row['item']} {_fmt(d)} vs {_fmt(e)}{ratio}"
        return f"{row['item']} {_fmt(d)} vs {_fmt(e)} ({_fmt(s)} development spreads)"
    if kind in ("class_mix", "orientation"):
        return f"{row['item']} {_fmt(d)} vs {_fmt(e)}"
    if kind == "clinical":
        if row.get("note"):
            return f"{row['item']} {row['note']}"
        return (f"{row['item']} mean {_fmt(d)} vs {_fmt(e)}, range {_fmt(row.get('development_range'))} vs "
                f"{_fmt(row.get('external_range'))} (SMD {_fmt(s)})")
    return f"{row['item']}: development {d}, external {e}"


def _rank(row: dict) -> float:
    s = to_float(row.get("shift"))
    return abs(s) if not math.isnan(s) else math.inf  # unmeasurable (absent/unseen) first


def shift_warnings(rows: list[dict], feature_table: pd.DataFrame | None = None, top: int = 5) -> list[str]:
    """One line per kind with flagged rows (development value first, then external), the largest
    ``top`` shifts named; the feature line counts flagged features and names the largest. Empty
    when nothing is flagged (a same-site cohort)."""
    lines = []
    by_kind: dict[str, list[dict]] = {}
    for r in rows or []:
        if r.get("flag"):
            by_kind.setdefault(r["kind"], []).append(r)
    kinds = [k for k in KIND_ORDER if k in by_kind] + sorted(k for k in by_kind if k not in KIND_ORDER)
    for kind in kinds:
        flagged = sorted(by_kind[kind], key=_rank, reverse=True)
        # explicitly named classes (absent / unseen) always shown, whatever ``top``
        named = [r for r in flagged if r.get("note")] if kind == "class_mix" else []
        shown = named + [r for r in flagged if r not in named][:max(0, top - len(named))]
        more = len(flagged) - len(shown)
        text = "; ".join(_describe(r) for r in shown) + (f"; and {more} more" if more > 0 else "")
        lines.append(f"shift: {KIND_TITLE.get(kind, kind)} (development vs external) — {text}")
    if feature_table is not None and len(feature_table):
        ft = feature_table
        n_flag = int(ft["flag"].sum()) if "flag" in ft else 0
        if n_flag:
            thr = ft["threshold"] if "threshold" in ft else SMD_FLAG
            big = int((ft["flag"] & (ft["smd"].abs() > thr)).sum())
            largest = ft[ft["flag"]].head(max(1, top))
            names = ", ".join(f"{r.feature} SMD {_fmt(r.smd)} (KS {_fmt(r.ks_stat)})" for r in largest.itertuples())
            extra = n_flag - big
            lines.append(f"shift: features — {n_flag} of {len(ft)} features shifted ({big} with |SMD| > "
                         f"{_fmt(float(np.max(thr)))}" + (f", {extra} by KS only" if extra > 0 else "")
                         + f"); largest: {names}")
    return lines
