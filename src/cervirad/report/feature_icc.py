"""The report's feature-ICC section (``features.robustness``, ``classification.min_icc``): how stable each
feature is under perturbation, how it agrees between manual and predicted masks, what the ICC filter kept.

Reads ``features/robustness.csv`` (perturbation ICC, training patients), ``classification/agreement.csv``
and ``classification/robust_filter.json``; draws the ICC(1,1) distribution per feature class and per
image type (box plots) into ``report_files/robustness_icc.png``. No file, no section.
"""
from __future__ import annotations

import html

import pandas as pd

from ..layout import AGREEMENT, ICC_PNG, ROBUST_FILTER, Layout
from ..plotting import pyplot, save_figure
from .artifacts import read_optional
from .markup import AS_IS, Section, df_table, figure, gallery

THRESHOLDS = (0.75, 0.9)


def icc_figure(df: pd.DataFrame):
    """Box plots of ICC(1,1): by feature class (left) and by image type (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    for ax, col in zip(axes, ("feature_class", "image_type")):
        groups = [(k, g["icc1"].dropna().clip(-1, 1).to_numpy()) for k, g in df.groupby(col, sort=True)]
        groups = [(k, v) for k, v in groups if len(v)]
        if groups:
            ax.boxplot([v for _, v in groups], showfliers=True, flierprops={"markersize": 2})
            ax.set_xticks(range(1, len(groups) + 1), [f"{k}\n(n={len(v)})" for k, v in groups], rotation=45,
                          ha="right", fontsize=8)
        for t, style in zip(THRESHOLDS, ("--", ":")):
            ax.axhline(t, color="#b35c00", linestyle=style, linewidth=1, label=f"ICC = {t}")
        ax.set_ylim(-0.05 if df["icc1"].min() >= 0 else -1.05, 1.05)
        ax.set_ylabel("ICC(1,1) across perturbations")
        ax.set_title(f"by {col.replace('_', ' ')}")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def share_table(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per group: features, median ICC(1,1) and the share kept at each threshold."""
    rows = []
    for k, g in list(df.groupby(by, sort=True)) + [("all", df)]:
        v = g["icc1"]
        rows.append([k, len(g), round(float(v.median()), 3) if v.notna().any() else None,
                     *[f"{100 * float((v >= t).mean()):.0f} %" for t in THRESHOLDS]])
    return pd.DataFrame(rows, columns=[by.replace("_", " "), "features", "median ICC(1,1)",
                                       *[f"kept at {t}" for t in THRESHOLDS]])


def _comparison(comp: dict) -> str:
    rows = []
    for name in ("filter_on", "filter_off"):
        for masks in ("manual", "predicted"):
            m = comp.get(name, {}).get(masks)
            if m:
                rows.append([name.replace("_", " "), masks, m.get("n"), *[m.get(k) for k in
                             ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")]])
    return df_table(pd.DataFrame(rows, columns=["filter", "masks", "test patients", "accuracy",
                                                "balanced accuracy", "F1 macro", "macro AUC"]), AS_IS)


def icc_sections(run: Layout, out: Layout) -> list[Section]:
    """``[(anchor, title, html)]``: the robustness section, or nothing when the run has no robustness.csv."""
    if not run.robustness.is_file():
        return []
    df = pd.read_csv(run.robustness)
    parts = [f"<p>Every training patient was extracted {int(df['n_perturbations'].max())} more times from a seeded "
             "chain of image and mask perturbations (noise, rotation, sub-voxel shift, one-voxel dilation/erosion, "
             f"contour jitter); ICC(1,1) across them, {int(df['n_patients'].max())} patients, "
             f"{len(df)} image features (features/robustness.csv).</p>"]
    icc_png = save_figure(icc_figure(df), out.report_files / ICC_PNG)
    parts.append(gallery([figure(icc_png, "ICC(1,1) per feature class and image type (dashed 0.75, dotted 0.9)",
                                 alt="ICC distribution")]))
    parts.append("<h3>Share of features kept, by feature class</h3>"
                 + df_table(share_table(df, "feature_class"), AS_IS))
    parts.append("<h3>By image type</h3>" + df_table(share_table(df, "image_type"), AS_IS))
    info = read_optional(run.classification_dir / ROBUST_FILTER) or {}
    agree_path = run.classification_dir / AGREEMENT
    if agree_path.is_file():
        ag = pd.read_csv(agree_path)
        if len(ag):
            n = int(ag["n_patients"].max())
            parts.append(f"<h3>Manual vs predicted (CRFE) masks, test patients (n = {n})</h3>"
                         "<p>ICC(1,1) between each feature's value from the expert's mask and from CRFE's mask "
                         "(classification/agreement.csv).</p>" + df_table(share_table(ag, "feature_class"), AS_IS))
    if info.get("min_icc") is not None:
        kept = info.get("kept_by_category", {})
        parts.append(f"<h3>Robust-feature filter: classification.min_icc = {info['min_icc']}</h3>"
                     f"<p>{info.get('n_kept')} of {info.get('n_features')} feature columns kept (columns without an "
                     "ICC, such as clinical variables, are kept).</p>"
                     + df_table(pd.DataFrame([[c, v["columns"], v["kept"], v["not_assessed"]] for c, v in kept.items()],
                                             columns=["category", "columns", "kept", "not assessed"]), AS_IS))
        if info.get("comparison"):
            parts.append(f"<p>Test metrics of the chosen model ({html.escape(str(info.get('best_model')))}) with and "
                         f"without the filter: {html.escape(str(info.get('comparison_method')))}.</p>"
                         + _comparison(info["comparison"]))
    return [("robustness", "Feature robustness (perturbation ICC)", "".join(parts))]
