"""The report's sections for issue 13's paper results: Table 1, calibration after SMOTE, the binary
sub-tasks side by side, and clinical vs radiomics vs histogram (importance share and ablation).

Reads only what the classify stage wrote in ``classification/`` (``table1.csv``, ``metrics.json``,
``summary.json``, ``targets.json`` with ``targets/<target>/``, ``ablation.json``). No file, no section.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ..layout import ABLATION, FIGURES, METRICS, MODEL_CARD, ROC_PNG, SUMMARY, TABLE1, TARGETS_SUMMARY, Layout
from .artifacts import read_optional
from .markup import ROUNDED, Section, figure, table


# --------------------------------------------------------------------------- sections
def table1_sections(run: Layout) -> list[Section]:
    """Table 1 (baseline characteristics per split and class), when the classify stage wrote it."""
    from ..classification.table1 import display

    p = run.classification_dir / TABLE1
    if not p.is_file():
        return []
    wide = display(pd.read_csv(p))
    note = ("<p class='muted'>Categorical: count (% of the group) [Wilson 95 % CI, %]; continuous: median [IQR] "
            "(bootstrap 95 % CI of the median); missing values counted as their own row. FIGO stage grouped I-IV; "
            "train+val = the patients the classifier is fitted on.</p>")
    return [("table1", "Table 1: baseline characteristics",
             note + table(wide.values.tolist(), list(wide.columns), ROUNDED))]


def _calibration(d: Path) -> str:
    m = read_optional(d / METRICS) or {}
    best = m.get("best_model")
    if not best:
        return ""
    card = read_optional(d / MODEL_CARD) or {}
    method = (card.get("calibration") or {}).get("method")
    if method:  # the model card names the calibration of the saved probabilities
        m = {**m, "calibration_method": method}
    models = [k[: -len(".brier")] for k in m if k.endswith(".brier") and k.count(".") == 1]
    rows = [[mod, m.get(f"{mod}.brier"), m.get(f"{mod}.calibration_intercept"), m.get(f"{mod}.calibration_slope")]
            for mod in models]
    return (calibration_table(m, str(best))
            + "<h3>Every model</h3>" + table(rows, ["model", "Brier [95 % CI]", "calibration intercept (0 ideal)",
                                                   "calibration slope (1 ideal)"], ROUNDED))


def calibration_table(m: dict, model: str) -> str:
    """Per class: calibration intercept and slope with intervals, positives, converged (the classify stage's
    one definition, internal and external alike); the model-level row last."""
    rows = []
    for k in m:
        if k.startswith(f"{model}.class_") and k.endswith(".calibration_slope"):
            label = k[len(f"{model}.class_"):-len(".calibration_slope")]
            a, b = m.get(f"{model}.class_{label}.calibration_intercept") or {}, m[k]
            rows.append([label, a, b, b.get("n"), "yes" if b.get("converged", True) and a.get("converged", True)
                         else "NO (value not estimable)"])
    a, b = m.get(f"{model}.calibration_intercept") or {}, m.get(f"{model}.calibration_slope") or {}
    failed = m.get(f"{model}.calibration_not_converged") or []
    rows.append([f"model (mean of {b.get('n_classes', '?')} classes)", a, b, "",
                 "all" if not failed else f"not estimable: class(es) {', '.join(map(str, failed))} did not converge"])
    return (f"<p>Calibration of the saved probabilities: <b>{html.escape(str(m.get('calibration_method', '?')))}"
            "</b> (from the model card).</p>"
            + table(rows, ["class", "intercept (0 ideal) [95 % CI]", "slope (1 ideal) [95 % CI]", "positives",
                           "fit converged"], ROUNDED)
            + f"<p class='muted'>{html.escape(str(m.get('calibration_definition', '')))}</p>")


def _targets(d: Path) -> str:
    t = read_optional(d / TARGETS_SUMMARY)
    if not t:
        return ""
    rows = [[r["target"], r["definition"], r["best_model"], r["n_test"], r.get("n_test_positive"),
             r.get("auc_macro"), r.get("accuracy"), r.get("balanced_accuracy"), r.get("f1_macro")] for r in t["rows"]]
    figs = []
    for r in t["rows"]:
        folder = t.get("folders", {}).get(r["target"])
        roc = d / folder / FIGURES / ROC_PNG.format(r["best_model"]) if folder else None
        if roc is not None and roc.is_file():
            figs.append(figure(roc, f"ROC, {r['target']} ({r['best_model']})"))
    return ("<p>Each task is a classify run of its own (every model tuned, final model by the same rule) on the same "
            "fitting and test patients and the same features; binary tasks: AUC of the positive class.</p>"
            + table(rows, ["target", "definition", "final model", "test patients", "positives", "AUC [95 % CI]",
                           "accuracy", "balanced accuracy", "F1 macro"], ROUNDED)
            + (f"<div class='figs'>{''.join(figs)}</div>" if figs else ""))


def _sources(d: Path) -> str:
    s = (read_optional(d / SUMMARY) or {}).get("importance_share")
    a = read_optional(d / ABLATION)
    parts = []
    if s:
        parts.append("<h3>Importance share among the final model's selected features</h3>" + table(
            [[src, v.get("n_selected"), v.get("permutation_share"), v.get("model_share")] for src, v in s.items()],
            ["source", "selected features", "share of permutation importance", "share of model importance"], ROUNDED))
    if a:
        parts.append(f"<h3>Ablation ({html.escape(str(a.get('model')))}, test patients)</h3>" + table(
            [[r["source"], r.get("n_columns"), r.get("auc_macro", r.get("note")), r.get("accuracy"),
              r.get("balanced_accuracy")] for r in a["rows"]],
            ["columns used", "columns", "macro AUC [95 % CI]", "accuracy", "balanced accuracy"], ROUNDED)
            + f"<p class='muted'>{html.escape(str(a.get('definition', '')))}</p>")
    return "".join(parts)


def results_sections(run: Layout) -> list[Section]:
    """Calibration, binary sub-tasks and sources, each when its artifact exists."""
    d = run.classification_dir
    if not (d / METRICS).is_file():
        return []
    out = []
    for anchor, title, body in (("calibration", "Calibration after SMOTE", _calibration(d)),
                                ("targets", "Binary sub-tasks of the pathological type", _targets(d)),
                                ("sources", "Clinical vs radiomics vs histogram features", _sources(d))):
        if body:
            out.append((anchor, title, body))
    return out
