"""The report's scanner section (``data.batch_column``): ``classification/harmonization.json``.

Batches and their class mix, the batch effect of every selected feature before and after ComBat
(Kruskal-Wallis, share of variance explained by batch), and the final model's metrics with and
without harmonisation on the same test patients. No file, no section.
"""
from __future__ import annotations

import html
from dataclasses import replace

from ..classification.harmonize_report import ALPHA, SHOWN
from ..layout import HARMONIZATION, Layout
from .artifacts import read_optional
from .markup import PLAIN, Section, cell, table


def _f(v, digits: int = 3) -> str:
    return cell(v, replace(PLAIN, number=f".{digits}f"))


def harmonization_sections(run: Layout) -> list[Section]:
    """``[(anchor, title, html)]``: the scanner section, or nothing without harmonization.json."""
    doc = read_optional(run.classification_dir / HARMONIZATION)
    if doc is None:
        return []
    if doc.get("note") and "metrics" not in doc:
        note = f"<p class='warn'>{html.escape(doc['note'])}</p>"
        return [("harmonization", "Scanners and ComBat harmonisation", note)]
    run_mode = doc.get("run_harmonize")
    parts = [f"<p>This run: <b>classification.harmonize: {html.escape(str(run_mode))}</b> (ComBat, "
             f"{html.escape(str(doc.get('prior')))} empirical Bayes, covariates "
             f"{html.escape(', '.join(doc.get('covariates') or []) or 'none')}; fitted inside every training fold, "
             f"never on test patients, never with the label). Model {html.escape(str(doc.get('model')))}.</p>"]
    mix = doc.get("class_mix_by_batch") or {}
    classes = sorted({c for v in mix.values() for c in v}, key=lambda c: (len(c), c))
    parts.append("<h3>Batches and their class mix</h3>" + table(
        [[b, doc["batches"][b]["fit"], doc["batches"][b]["test"]] + [mix[b].get(c, 0) for c in classes] for b in mix],
        ["batch", "train+val", "test"] + [f"class {c}" for c in classes], PLAIN))
    m = doc.get("metrics") or {}
    parts.append("<h3>Final model with and without ComBat, same test patients (95 % bootstrap CI)</h3>" + table(
        [[k, m.get("with", {}).get(k), m.get("without", {}).get(k), m.get("difference", {}).get(k)] for k in SHOWN],
        ["metric", "with ComBat", "without", "difference (paired)"], PLAIN))
    for part, title in (("test", "test patients, frozen ComBat"), ("fit", "train+val patients, ComBat fitted on them")):
        eff = (doc.get("batch_effect") or {}).get(part) or {}
        s = eff.get("summary") or {}
        parts.append(f"<h3>Batch effect of the selected features ({title})</h3><p>Median share of variance explained "
                     f"by batch (eta²) {_f(s.get('eta2_median_before'))} before, {_f(s.get('eta2_median_after'))} "
                     f"after ComBat; features with Kruskal-Wallis p &lt; {ALPHA}: "
                     f"{s.get(f'n_kw_p_below_{ALPHA}_before')} before, {s.get(f'n_kw_p_below_{ALPHA}_after')} after, "
                     f"of {s.get('n_features')}.</p>")
        a = eff.get("all_image_features") or {}
        if a:
            parts.append(f"<p class='muted'>All {a.get('n_features')} harmonised image features: median eta² "
                         f"{_f(a.get('eta2_median_before'))} before, {_f(a.get('eta2_median_after'))} after; "
                         f"Kruskal-Wallis p &lt; {ALPHA}: {a.get(f'n_kw_p_below_{ALPHA}_before')} before, "
                         f"{a.get(f'n_kw_p_below_{ALPHA}_after')} after.</p>")
        rows = eff.get("features") or []
        if rows:
            parts.append("<details><summary>Per feature</summary>" + table(
                [[r["feature"], r["eta2_before"], r["eta2_after"], _f(r["kw_h_before"], 2), _f(r["kw_h_after"], 2),
                  _f(r["kw_p_before"], 4), _f(r["kw_p_after"], 4)] for r in rows],
                ["feature", "eta² before", "eta² after", "KW H before", "KW H after", "KW p before", "KW p after"],
                PLAIN)
                + "</details>")
    parts.append("<p class='muted'>" + html.escape(str(doc.get("definition", ""))) + ". When the class mix differs "
                 "by batch, part of a feature's batch effect is the class: ComBat (label-free) removes some class "
                 "signal with it.</p>")
    return [("harmonization", "Scanners and ComBat harmonisation", "".join(parts))]

