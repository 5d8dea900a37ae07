"""The report's classification sections: the headline (the final model end to end on predicted masks,
expert masks beside it), the model choice and comparison on the test patients, the best model's selected
features and figures, and the test metrics on manual vs predicted masks.

Reads the classify stage's ``classification/`` folder (``metrics.json``, ``metrics_predicted.json``,
``summary.json``, ``model_card.json``, ``figures/``).
"""
from __future__ import annotations

import html
from typing import Any

from ..classification.metrics import HEADLINE
from ..layout import FIGURES, METRICS, METRICS_PREDICTED, MODEL_CARD, SUMMARY, Layout
from .artifacts import read_optional, scalar_metrics
from .markup import figures, table

# the classify stage's headline metrics, plus the ones the report also shows in its comparison tables
REPORT_HEADLINE = HEADLINE + ("f1_weighted", "brier", "inner_cv_score")


def metrics_pivot(flat: dict, prefixes: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Pivot ``{"rf.accuracy": v, ...}`` into rows (metric) x columns (prefix)."""
    cols = [p for p in prefixes if any(k.startswith(p + ".") for k in flat)]
    if not cols:
        rows = [[k, v] for k, v in flat.items() if not isinstance(v, (list, str)) or k.endswith("model")]
        return ["value"], rows
    names: list[str] = []
    for k in flat:
        for p in cols:
            if k.startswith(p + "."):
                m = k[len(p) + 1:]
                if m not in names:
                    names.append(m)
    rows = [[m] + [flat.get(f"{p}.{m}", "") for p in cols] for m in names]
    return cols, rows


def headline(m: dict, pred: dict | None, best: str | None) -> str:
    """The deployable result first: the final model on the test patients' CRFE (predicted) masks - what a new
    patient gets - with the expert-mask result beside it (issue 23)."""
    if not best:
        return ""
    b = m.get("best_definition") or ""
    if not pred:
        return (f"<h3>Headline: {html.escape(str(best))}, expert masks</h3><p class='note'>This run has no features "
                "from predicted masks, so the headline rests on expert masks - not what deployment would get.</p>"
                + table([[k, m.get(f"best.{k}", "")] for k in HEADLINE], ["metric", "expert masks [95 % CI]"]))
    rows = [[k, pred.get(f"{best}.{k}", ""), m.get(f"{best}.{k}", "")] for k in HEADLINE]
    failed = pred.get("n_failed_masks") or 0
    note = (f"<p class='warn'>{failed} test patient(s) without predicted-mask features: "
            f"{html.escape(str(pred.get('failed_mask_scoring', '')))}.</p>" if failed else "")
    return (f"<h3>Headline: {html.escape(str(best))} end to end (CRFE masks -> features -> classifier), "
            f"{pred.get('n_eval_patients', '?')} test patients</h3>"
            + table(rows, ["metric", "end to end: predicted masks [95 % CI]", "expert masks [95 % CI]"]) + note
            + f"<p class='muted'>{html.escape(b)}. Intervals: each metric's own method (metrics.json ci_method).</p>")


def classification_section(run: Layout, models: list[str]) -> str:
    d = run.classification_dir
    if not d.is_dir():
        return "<p class='muted'>Classification was not run.</p>"
    parts = []
    m = read_optional(d / METRICS) or {}
    best = m.get("best_model")
    if best:
        rule = m.get("best_model_rule") or "inner cross-validation"
        parts.append(f"<p>Final model (never chosen on the test set): <b>{html.escape(str(best))}</b>, by "
                     f"{html.escape(rule)}.</p>")
    parts.append(headline(m, read_optional(d / METRICS_PREDICTED), best))
    if m.get("small_sample_warning"):
        parts.append(f"<p class='note'>Small sample: {html.escape(m['small_sample_warning'])}.</p>")
    absent = m.get("classes_absent_from_training")
    if absent:
        parts.append(f"<p class='note'>Class(es) absent from training: <b>{html.escape(', '.join(map(str, absent)))}"
                     "</b> - the models never saw them, so they cannot predict them; they are evaluated from a zero "
                     "probability (AUC 0.5) and count in the macro AUC.</p>")
    if m.get("auc_macro_definition") or m.get("ci_method"):
        parts.append("<p class='muted'>Macro AUC: " + html.escape(str(m.get("auc_macro_definition", ""))) + ". CI: "
                     + html.escape(str(m.get("ci_method", ""))) + "; an interval of zero width shows the n it rests "
                     "on.</p>")
    summary = read_optional(d / SUMMARY) or {}
    evidence = summary.get("model_choice") or {}
    if evidence:
        keys = sorted({k for v in evidence.values() for k in v})
        parts.append(table([[name] + [v.get(k, "") for k in keys] for name, v in evidence.items()],
                           ["model"] + [k.replace("_", " ") for k in keys]))
    cols, rows = metrics_pivot(scalar_metrics(m), models)
    head = [r for r in rows if r[0] in REPORT_HEADLINE]
    rest = [r for r in rows if r[0] not in REPORT_HEADLINE]
    parts.append("<h3>Model comparison on the test patients (bootstrap 95 % CI over patients)</h3>"
                 + table(head or rows, ["metric"] + cols))
    if head and rest:
        parts.append("<details><summary>Per-class metrics and support</summary>" + table(rest, ["metric"] + cols)
                     + "</details>")
    card = read_optional(d / MODEL_CARD) or {}
    feats = card.get("selected_features")
    if feats:
        parts.append(f"<h3>Selected features of the best model ({len(feats)})</h3><p class='muted'>"
                     + html.escape(", ".join(map(str, feats[:60]))) + ("…" if len(feats) > 60 else "") + "</p>")
    parts.append(figures(sorted((d / FIGURES).glob("*.png"))))
    return "".join(parts)


def manual_vs_predicted(run: Layout, models: list[str]) -> str:
    d = run.classification_dir
    m = read_optional(d / METRICS) or {}
    pred = read_optional(d / METRICS_PREDICTED)
    if not pred:
        return "<p class='muted'>No features from predicted masks in this run (run-all extracts them for the test patients).</p>"
    cols = [c for c in models if any(k.startswith(c + ".") for k in pred)]
    header, rows = ["metric"], []
    for c in cols:
        header += [f"{c}: manual", f"{c}: predicted"]
    for metric in REPORT_HEADLINE:
        if any(f"{c}.{metric}" in pred for c in cols):
            row: list = [metric]
            for c in cols:
                row += [m.get(f"{c}.{metric}", ""), pred.get(f"{c}.{metric}", "")]
            rows.append(row)
    note = ("<p>Deployment has only predicted masks: the <i>predicted</i> columns are what a new patient would get. "
            "Both score the same test patients with the same fitted models; only the lesion masks differ "
            "(expert vs CRFE).</p>")
    return note + table(rows, header)
