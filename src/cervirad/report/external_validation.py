"""The report's external-validation section (``external_report.html``): the frozen development model on
this cohort - internal test vs external metrics per mask source, why a class or an AUC is missing, the
calibration, the shift check (cohort and selected features, per mask source) and how the external scanners
were harmonised (transductive or not).

Reads the evaluate command's ``classification/`` folder (``summary.json``, ``metrics.json``,
``metrics_predicted.json``, ``shift.json``).
"""
from __future__ import annotations

import html

from ..layout import METRICS, METRICS_PREDICTED, SHIFT, SUMMARY, Layout
from .artifacts import read_optional
from .markup import table
from .paper_results import calibration_table


def _scanner_note(summary: dict) -> str:
    """One paragraph on the external scanners (a harmonised model), '' otherwise."""
    h = summary.get("harmonization") or {}
    if not h:
        return ""
    cls = "warn" if h.get("mode") == "transductive" else "muted"
    label = "TRANSDUCTIVE harmonisation (evaluate --harmonize)" if h.get("mode") == "transductive" else "Harmonisation"
    scanners = ", ".join(f"{html.escape(k)} ({v})" for k, v in (h.get("scanners") or {}).items())
    return f"<p class='{cls}'><b>{label}</b>: scanners {scanners}. {html.escape(str(h.get('note', '')))}.</p>"


def _undefined(values: dict, key: str):
    """A metric of the external table; an AUC that is undefined (None) says so."""
    v = values.get(key, "")
    return "undefined" if v is None and key.startswith("auc") else v


def _metrics_notes(run: Layout) -> list[str]:
    """Per metrics file: unseen or absent classes, undefined AUCs, patients without features, calibration."""
    parts = []
    for name in (METRICS_PREDICTED, METRICS):
        m = read_optional(run.classification_dir / name) or {}
        if m.get("classes_unseen_in_development"):
            parts.append(f"<p class='warn'>Classes unseen in development ({name}): "
                         f"{html.escape(str(m['classes_unseen_in_development']))}.</p>")
        if m.get("classes_absent_externally"):
            parts.append(f"<p class='muted'>Development classes absent externally ({name}): "
                         f"{html.escape(str(m['classes_absent_externally']))}.</p>")
        why = m.get("auc_undefined") or {}
        if why.get("macro"):
            parts.append(f"<p class='warn'>Macro AUC ({name}) {html.escape(why['macro'])}.</p>")
        per_class = {c: r for c, r in why.items() if c != "macro"}
        if per_class:
            parts.append(f"<p class='muted'>No AUC ({name}) for " + "; ".join(
                f"class {html.escape(c)}: {html.escape(r)}" for c, r in per_class.items()) + ".</p>")
        if m.get("n_without_prediction"):
            parts.append(f"<p class='warn'>{m['n_without_prediction']} patient(s) without features ({name}): "
                         f"{html.escape(', '.join(m.get('patients_without_prediction', [])))} - "
                         f"{html.escape(str(m.get('without_prediction_scoring', '')))}.</p>")
        if m.get("best_model"):
            parts.append(f"<h3>Calibration ({name})</h3>" + calibration_table(m, str(m["best_model"])))
    return parts


def _shift_check(shift: dict) -> list[str]:
    """The shift check's warnings, the flagged cohort items and the selected features per mask source."""
    warns = shift.get("warnings") or []
    parts = ["<h3>Shift check</h3>" + ("".join(f"<p class='warn'>{html.escape(w)}</p>" for w in warns)
                                       or "<p class='ok'>No shift flagged.</p>")]
    flagged = [r for r in shift.get("cohort", []) if r.get("flag")]
    if flagged:
        parts.append(table([[r.get("kind"), r.get("item"), r.get("development"), r.get("external"), r.get("shift")]
                            for r in flagged], ["kind", "item", "development", "external", "shift"]))
    for source, comp in (shift.get("features_by_mask_source") or {}).items():
        feats = comp.get("features") or []
        head = f"<h3>Selected features, {html.escape(source)} masks: {html.escape(comp.get('compared', ''))}</h3>"
        if not feats:
            parts.append(head + f"<p class='muted'>{html.escape(comp.get('skipped', 'no features'))}</p>")
            continue
        cols = [c for c in ("feature", "smd", "ks_stat", "ks_p", "dev_median", "ext_median", "flag") if c in feats[0]]
        parts.append(head + f"<p class='muted'>{sum(1 for f in feats if f.get('flag'))} of {len(feats)} flagged; "
                     "largest shift first</p>" + table([[f.get(c) for c in cols] for f in feats[:15]], cols))
    return parts


def external_section(run: Layout, development: str) -> str:
    """The frozen development model on this cohort: internal test vs external, and the shift check."""
    s = read_optional(run.classification_dir / SUMMARY) or {}
    internal, sources = s.get("development_internal_test") or {}, s.get("sources") or {}
    keys = list(internal) or sorted({k for v in sources.values() for k in v})
    header = ["metric", "development: internal test"] + [f"external: {m} masks" for m in sources]
    rows = [[k, internal.get(k, "")] + [_undefined(sources[m], k) for m in sources] for k in keys]
    parts = [f"<p>Development run <code>{html.escape(str(development))}</code>, model "
             f"<b>{html.escape(str(s.get('model')))}</b>, applied unchanged (nothing refitted).</p>",
             _scanner_note(s),
             table(rows, header) if rows else "<p class='muted'>The external cohort has no labels: no metrics.</p>"]
    parts += _metrics_notes(run)
    parts += _shift_check(read_optional(run.classification_dir / SHIFT) or {})
    return "".join(parts)
