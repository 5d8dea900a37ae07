"""The report's lesion-segmentation section: the networks compared, the run's model and its test metrics
(with intervals), lesion detection and the miss penalty of the headline HD, the metrics per lesion size,
and the figures of ``segmentation/`` (overlays, and the networks trained beside the run's model).

Reads train-seg's ``segmentation/`` folder (``metrics.json``, ``comparison.csv``, its PNGs). The
recipe (plan, folds, inference) is :mod:`.segmentation_recipe`'s section.
"""
from __future__ import annotations

import html

import pandas as pd

from ..layout import COMPARISON, FOLD_CURVES, METRICS, OVERLAYS, Layout
from .artifacts import read_optional, scalar_metrics
from .markup import figures, table


def detection_summary(m: dict) -> str:
    """Detection rate, HD95 over detected lesions (with n) and the miss penalty of the headline HD."""
    if "detection_rate" not in m:
        return ""
    n_det, n_miss = m.get("n_patients_detected"), m.get("n_patients_missed")
    n_lesions = (n_det or 0) + (n_miss or 0)
    rows = [["detection rate (any predicted voxel inside the lesion)", m["detection_rate"], n_lesions],
            ["HD95 (mm), detected lesions only", m.get("hd95_mm_detected", {"value": None}), n_det],
            ["Hausdorff (mm), detected lesions only", m.get("hausdorff_mm_detected", {"value": None}), n_det],
            ["HD95 (mm), headline: misses count as the penalty", m.get("hd95_mm", {"value": None}), n_lesions]]
    penalty = html.escape(str(m.get("hd_miss_penalty", "image diagonal (mm)")))
    return ("<h3>Lesion detection and boundary distance</h3>"
            + table(rows, ["metric", "value [95 % CI]", "n patients"])
            + f"<p class='muted'>{n_miss} of {n_lesions} lesion(s) missed (no predicted voxel inside the reference "
              f"mask). The headline HD / HD95 give each miss the penalty {penalty} of that patient's image, so a "
              "miss cannot lower the mean; the detected-only figures leave misses out.</p>")


def lesion_size_strata(m: dict) -> str:
    """Dice, foreground IoU and detection rate per band of the greatest lesion diameter."""
    strata = m.get("by_lesion_size")
    if not isinstance(strata, dict) or not strata:
        return ""
    na = {"value": None}
    rows = [[band, v.get("n_patients", 0), v.get("dice", na), v.get("iou_foreground", na), v.get("detection_rate", na)]
            for band, v in strata.items()]
    return ("<h3>By lesion size (greatest 3D diameter of the reference mask)</h3>"
            + table(rows, ["diameter band", "n patients", "Dice", "foreground IoU", "detection rate"]))


def comparison_table(df: pd.DataFrame) -> str:
    """comparison.csv as metric rows x model columns, each metric 'value [95 % CI]'."""
    facts = [c for c in ("n_patients", "parameters", "unet_width", "deeplab_base", "n_folds", "best_epoch",
                         "best_val_dice", "train_seconds")
             if c in df.columns]
    rows = [[c] + ["—" if pd.isna(v) else v for v in df[c]] for c in facts]

    def num(v):
        return None if pd.isna(v) else float(v)

    for m in (c for c in df.columns if f"{c}_ci_low" in df.columns):  # the metrics, in comparison.csv's order
        rows.append([m] + [{"value": num(r[m]), "ci_low": num(r[f"{m}_ci_low"]), "ci_high": num(r.get(f"{m}_ci_high"))}
                           for _, r in df.iterrows()])
    from ..networks import network_label

    return table(rows, ["", *[network_label(str(x)) for x in df["model"]]])


def segmentation_section(run: Layout) -> str:
    d = run.segmentation_dir()
    if not d.is_dir():
        return "<p class='muted'>Segmentation was not run.</p>"
    parts = []
    comp = d / COMPARISON
    if comp.is_file():
        parts.append("<h3>Networks compared (same split, test patients)</h3>" + comparison_table(pd.read_csv(comp)))
    m = read_optional(d / METRICS) or {}
    from ..networks import NETWORKS, network_label

    if m.get("selection"):
        pick = m["selection"]
        parts.append(f"<p>segmentation.model auto: the run's model is {html.escape(network_label(pick['chosen']))} "
                     f"({html.escape(str(pick['why']))}); the test patients played no part in the choice.</p>")
    if m:
        flat = scalar_metrics(m)
        parts.append(f"<h3>{html.escape(network_label(m.get('model', 'crfe')))} test metrics (mean over test patients, "
                     "bootstrap 95 % CI)</h3>")
        parts.append(table([[k, v] for k, v in flat.items()], ["metric", "value [95 % CI]"]))
        parts.append("<p class='muted'>foreground IoU is the lesion's IoU; mean IoU averages lesion and background "
                     "(the only reading compatible with the paper's IoU 0.94 at Dice 0.60).</p>")
        parts.append(detection_summary(m))
        parts.append(lesion_size_strata(m))
    # the fold curves belong to the recipe section
    pngs = [p for p in sorted(d.glob("*.png")) if p.name != FOLD_CURVES] + sorted((d / OVERLAYS).glob("*.png"))[:8]
    parts.append(figures(pngs))
    for arch in NETWORKS:  # the networks trained beside the run's model
        side = d / arch
        if side.is_dir():
            parts.append(f"<h3>{html.escape(network_label(arch))} (trained beside)</h3>" + figures(sorted(side.glob("*.png"))[:4]))
    return "".join(parts)
