"""One self-contained ``report.html`` per run: every figure embedded, nothing fetched.

The report reads the run directory's artifacts (it never recomputes a stage): provenance
from ``run.json``, the cohort fingerprint and split, segmentation metrics and figures,
feature counts, classification metrics and figures, manual-vs-predicted test metrics, a
decision curve for one category, and a TRIPOD+AI / CLEAR checklist.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..classification.metrics import HEADLINE
from ..pathology import CATEGORY_NAMES, LABEL
from ..config import MODELS
from ..files import read_json, write_text
from ..layout import (COLUMN_COUNTS, COMPARISON, ERRORS, FIGURES, FOLD_CURVES, METRICS, METRICS_PREDICTED, MODEL_CARD,
                      OVERLAYS, PREDICTIONS, SUMMARY, Layout)
from ..plotting import save_figure
from ..rundir import RunDir, StageContext
from .checklist import build_checklist
from .harmonization import external_note, harmonization_sections
from .paper_results import calibration_table, results_sections, table1_sections
from .robustness import robustness_sections
from .segmentation_recipe import recipe_sections

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;opacity:.85}nav{padding:8px 32px;background:#e8edf3;font-size:14px}
nav a{margin-right:14px;color:#1f3a5f;text-decoration:none}main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border-radius:8px;padding:16px 22px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin-top:0;color:#1f3a5f;font-size:20px}h3{font-size:16px;margin:18px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}th,td{border:1px solid #d6dbe3;padding:4px 8px;text-align:right}
th{background:#eef2f7}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:14px}.figs figure{margin:0;max-width:520px}
.figs img{max-width:100%;border:1px solid #e1e5eb}figcaption{font-size:12px;color:#566}
.ok{color:#1b7f3b}.warn{color:#b35c00}.bad{color:#b00020}.muted{color:#667}
pre{background:#f0f2f5;padding:10px;overflow:auto;font-size:12px;max-height:420px}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:8px 12px;font-size:14px}
"""


# --------------------------------------------------------------------------- helpers
def _read_json(p: Path) -> Any:
    return read_json(p) if p.is_file() else None


def _img(path: Path, caption: str | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    cap = html.escape(caption or path.stem.replace("_", " "))
    return f'<figure><img alt="{cap}" src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>'


def _figs(paths: list[Path]) -> str:
    return '<div class="figs">' + "".join(_img(p) for p in paths) + "</div>" if paths else ""


def _fmt(v: Any) -> str:
    if isinstance(v, dict) and "value" in v:
        val, lo, hi = v.get("value"), v.get("ci_low"), v.get("ci_high")
        if val is None:
            return "n/a"
        if v.get("n_too_small"):  # issue 23: no per-class interval below 5 patients
            return (f"{val:.3f} <span class='warn' title='no interval below 5 patients of the class'>n too small "
                    f"(n={v.get('n')})</span>")
        if lo is None or hi is None:
            return _fmt(val)
        ci = f"{val:.3f} <span class='muted'>[{lo:.3f}, {hi:.3f}]</span>"
        if lo == hi and v.get("n") is not None:  # a zero-width interval is a tiny sample, not certainty
            ci += f" <span class='warn' title='degenerate interval: rests on n = {v['n']}'>n={v['n']}</span>"
        return ci
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return html.escape(json.dumps(v)[:120])
    return html.escape(str(v))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _df_table(df: pd.DataFrame, max_rows: int = 60) -> str:
    return _table(df.head(max_rows).values.tolist(), list(df.columns))


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


# the classify stage's headline metrics, plus the ones the report also shows in its comparison tables
REPORT_HEADLINE = HEADLINE + ("f1_weighted", "brier", "inner_cv_score")


def _scalar_metrics(flat: dict) -> dict:
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) or (isinstance(v, dict) and "value" in v)}


# --------------------------------------------------------------------------- sections
def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _summary_section(run: RunDir, info: dict) -> str:
    stages = info.get("stages", {})
    rows = [[name, rec.get("status", "?") if name != "report" else "this page", rec.get("seconds", ""),
             rec.get("finished", rec.get("started", "")), (rec.get("error") or "")[:140]] for name, rec in stages.items()]
    prov = [["run directory", str(run.path)], ["cervirad", info.get("cervirad_version")],
            ["git commit", info.get("git_commit")], ["config hash", info.get("config_hash")],
            ["created", info.get("created")], ["seeds", info.get("seeds")], ["python", info.get("python")]]
    pk = [[k, v] for k, v in (info.get("packages") or {}).items()]
    return (_table(prov, ["provenance", ""]) + "<h3>Stages</h3>" + _table(rows, ["stage", "status", "seconds", "finished", "error"])
            + "<details><summary>Package versions</summary>" + _table(pk, ["package", "version"]) + "</details>")


def _cohort_section(run: RunDir, fp: dict | None, splits: dict | None) -> str:
    if not fp:
        return "<p class='bad'>No fingerprint.json: run <code>cervirad validate</code>.</p>"
    parts = [f"<p>{fp.get('n_patients')} patients, {fp.get('n_with_mask')} with a lesion mask; lesion volume (ml) "
             f"{_fmt(fp.get('lesion_volume_ml'))}.</p>"]
    seq_rows = [[s, d.get("spacing_median"), d.get("size_median"), d.get("intensity_p50_median")]
                for s, d in fp.get("sequences", {}).items()]
    parts.append(_table(seq_rows, ["sequence", "median spacing (mm)", "median size", "median intensity"]))
    if fp.get("warnings"):
        parts.append("<p class='muted'>" + "<br>".join(html.escape(w) for w in fp["warnings"]) + "</p>")
    if splits:
        counts = {}
        for row in fp.get("patients", []):
            counts[row["id"]] = row
        labels = _labels(run)
        cats = sorted({labels[p] for p in labels}) if labels else []
        rows = []
        for part in ("train", "val", "test"):
            ids = splits.get(part, [])
            rows.append([part, len(ids)] + [sum(1 for p in ids if labels.get(p) == c) for c in cats])
        parts.append("<h3>The one patient-level split (splits.json)</h3>")
        parts.append(_table(rows, ["split", "patients"] + [f"cat {c}" for c in cats]))
        pp = _read_json(run.preprocess_summary)
        if pp:
            srows = [[k, v["patients"], v["slices"], v["with_lesion"], v["without_lesion"]] for k, v in pp["per_split"].items()]
            parts.append(_table(srows, ["split", "patients", "slices", "with lesion", "without lesion"]))
    if fp.get("class_counts"):
        parts.append("<h3>Categories (Pathologic_typing)</h3>")
        parts.append(_table([[k, CATEGORY_NAMES.get(int(k), "?"), v] for k, v in fp["class_counts"].items()],
                            ["category", "meaning", "patients"]))
    return "".join(parts)


def _labels(run: RunDir) -> dict[str, int]:
    p = run.features_table("manual")
    if not p.is_file():
        return {}
    df = pd.read_parquet(p, columns=["patient_id", LABEL])
    return dict(zip(df.patient_id.astype(str), df[LABEL].astype(int)))


def _detection_summary(m: dict) -> str:
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
            + _table(rows, ["metric", "value [95 % CI]", "n patients"])
            + f"<p class='muted'>{n_miss} of {n_lesions} lesion(s) missed (no predicted voxel inside the reference "
              f"mask). The headline HD / HD95 give each miss the penalty {penalty} of that patient's image, so a "
              "miss cannot lower the mean; the detected-only figures leave misses out.</p>")


def _lesion_size_strata(m: dict) -> str:
    """Dice, foreground IoU and detection rate per band of the greatest lesion diameter."""
    strata = m.get("by_lesion_size")
    if not isinstance(strata, dict) or not strata:
        return ""
    na = {"value": None}
    rows = [[band, v.get("n_patients", 0), v.get("dice", na), v.get("iou_foreground", na), v.get("detection_rate", na)]
            for band, v in strata.items()]
    return ("<h3>By lesion size (greatest 3D diameter of the reference mask)</h3>"
            + _table(rows, ["diameter band", "n patients", "Dice", "foreground IoU", "detection rate"]))


def _comparison_table(df: pd.DataFrame) -> str:
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
    from ..segmentation.model import network_label

    return _table(rows, ["", *[network_label(str(x)) for x in df["model"]]])


def _segmentation_section(run: RunDir) -> str:
    d = run.segmentation_dir()
    if not d.is_dir():
        return "<p class='muted'>Segmentation was not run.</p>"
    parts = []
    comp = d / COMPARISON
    if comp.is_file():
        parts.append("<h3>Networks compared (same split, test patients)</h3>" + _comparison_table(pd.read_csv(comp)))
    m = _read_json(d / METRICS) or {}
    from ..segmentation.model import ARCHITECTURES, network_label

    if m.get("selection"):
        pick = m["selection"]
        parts.append(f"<p>segmentation.model auto: the run's model is {html.escape(network_label(pick['chosen']))} "
                     f"({html.escape(str(pick['why']))}); the test patients played no part in the choice.</p>")
    if m:
        flat = _scalar_metrics(m)
        parts.append(f"<h3>{html.escape(network_label(m.get('model', 'crfe')))} test metrics (mean over test patients, "
                     "bootstrap 95 % CI)</h3>")
        parts.append(_table([[k, v] for k, v in flat.items()], ["metric", "value [95 % CI]"]))
        parts.append("<p class='muted'>foreground IoU is the lesion's IoU; mean IoU averages lesion and background "
                     "(the only reading compatible with the paper's IoU 0.94 at Dice 0.60).</p>")
        parts.append(_detection_summary(m))
        parts.append(_lesion_size_strata(m))
    # the fold curves belong to the recipe section
    pngs = [p for p in sorted(d.glob("*.png")) if p.name != FOLD_CURVES] + sorted((d / OVERLAYS).glob("*.png"))[:8]
    parts.append(_figs(pngs))
    for arch in ARCHITECTURES:  # the networks trained beside the run's model
        side = d / arch
        if side.is_dir():
            parts.append(f"<h3>{html.escape(network_label(arch))} (trained beside)</h3>" + _figs(sorted(side.glob("*.png"))[:4]))
    return "".join(parts)


def _features_section(run: RunDir) -> str:
    d = run.features_dir("manual")
    if not d.is_dir():
        return "<p class='muted'>Features were not extracted.</p>"
    parts = []
    counts = _read_json(d / COLUMN_COUNTS)
    if counts:
        rows = [[k, v] for k, v in counts.items() if k != "total"]
        parts.append(_table(rows + [["total", counts["total"]]], ["category", "columns"]))
    err = d / ERRORS
    if err.is_file():
        e = pd.read_csv(err)
        parts.append(f"<p>{len(e)} case(s) failed extraction.</p>" + (_df_table(e) if len(e) else ""))
    return "".join(parts)


def _headline(m: dict, pred: dict | None, best: str | None) -> str:
    """The deployable result first: the final model on the test patients' CRFE (predicted) masks - what a new
    patient gets - with the expert-mask result beside it (issue 23)."""
    if not best:
        return ""
    b = m.get("best_definition") or ""
    if not pred:
        return (f"<h3>Headline: {html.escape(str(best))}, expert masks</h3><p class='note'>This run has no features "
                "from predicted masks, so the headline rests on expert masks - not what deployment would get.</p>"
                + _table([[k, m.get(f"best.{k}", "")] for k in HEADLINE], ["metric", "expert masks [95 % CI]"]))
    rows = [[k, pred.get(f"{best}.{k}", ""), m.get(f"{best}.{k}", "")] for k in HEADLINE]
    failed = pred.get("n_failed_masks") or 0
    note = (f"<p class='warn'>{failed} test patient(s) without predicted-mask features: "
            f"{html.escape(str(pred.get('failed_mask_scoring', '')))}.</p>" if failed else "")
    return (f"<h3>Headline: {html.escape(str(best))} end to end (CRFE masks -> features -> classifier), "
            f"{pred.get('n_eval_patients', '?')} test patients</h3>"
            + _table(rows, ["metric", "end to end: predicted masks [95 % CI]", "expert masks [95 % CI]"]) + note
            + f"<p class='muted'>{html.escape(b)}. Intervals: each metric's own method (metrics.json ci_method).</p>")


def _classification_section(run: RunDir, models: list[str]) -> str:
    d = run.classification_dir
    if not d.is_dir():
        return "<p class='muted'>Classification was not run.</p>"
    parts = []
    m = _read_json(d / METRICS) or {}
    best = m.get("best_model")
    if best:
        rule = m.get("best_model_rule") or "inner cross-validation"
        parts.append(f"<p>Final model (never chosen on the test set): <b>{html.escape(str(best))}</b>, by "
                     f"{html.escape(rule)}.</p>")
    parts.append(_headline(m, _read_json(d / METRICS_PREDICTED), best))
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
    summary = _read_json(d / SUMMARY) or {}
    evidence = summary.get("model_choice") or {}
    if evidence:
        keys = sorted({k for v in evidence.values() for k in v})
        parts.append(_table([[name] + [v.get(k, "") for k in keys] for name, v in evidence.items()],
                            ["model"] + [k.replace("_", " ") for k in keys]))
    cols, rows = metrics_pivot(_scalar_metrics(m), models)
    head = [r for r in rows if r[0] in REPORT_HEADLINE]
    rest = [r for r in rows if r[0] not in REPORT_HEADLINE]
    parts.append("<h3>Model comparison on the test patients (bootstrap 95 % CI over patients)</h3>"
                 + _table(head or rows, ["metric"] + cols))
    if head and rest:
        parts.append("<details><summary>Per-class metrics and support</summary>" + _table(rest, ["metric"] + cols)
                     + "</details>")
    card = _read_json(d / MODEL_CARD) or {}
    feats = card.get("selected_features")
    if feats:
        parts.append(f"<h3>Selected features of the best model ({len(feats)})</h3><p class='muted'>"
                     + html.escape(", ".join(map(str, feats[:60]))) + ("…" if len(feats) > 60 else "") + "</p>")
    parts.append(_figs(sorted((d / FIGURES).glob("*.png"))))
    return "".join(parts)


def _manual_vs_predicted(run: RunDir, models: list[str]) -> str:
    d = run.classification_dir
    m = _read_json(d / METRICS) or {}
    pred = _read_json(d / METRICS_PREDICTED)
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
    return note + _table(rows, header)


def _dca_section(run: RunDir, category: int | None, out: Layout) -> tuple[str, bool]:
    if category is None:
        return "<p class='muted'>Decision-curve analysis disabled (report.dca_category is null).</p>", False
    p = run.classification_dir / PREDICTIONS
    if not p.is_file():
        return "<p class='muted'>No test predictions to analyse.</p>", False
    df = pd.read_csv(p)
    truth, prob = LABEL, f"prob_{category}"
    if truth not in df.columns or prob not in df.columns:
        return f"<p class='muted'>Predictions carry no probability column for category {category}.</p>", False
    from .dca import decision_curve_figure

    y = (df[truth].astype(str) == str(category)).to_numpy()
    if y.sum() == 0:
        return f"<p class='muted'>No test patient of category {category}: no decision curve.</p>", False
    fig = decision_curve_figure(y, df[prob].to_numpy(), f"category {category} ({CATEGORY_NAMES.get(category, '')}) vs rest")
    out = save_figure(fig, out.report_files / f"dca_category_{category}.png")
    return _figs([out]), True


def _checklist_section(items: list[dict]) -> str:
    cls = {"filled": "ok", "user": "warn", "missing": "bad", "not_reported": "bad"}
    label = {"filled": "filled from the run", "user": "TO COMPLETE by the study team", "missing": "missing in this run",
             "not_reported": "not reported (config field empty)"}
    rows = "".join(f"<tr><td>{html.escape(i['ref'])}</td><td>{html.escape(i['item'])}</td>"
                   f"<td class='{cls[i['status']]}'>{label[i['status']]}</td><td>{html.escape(i['evidence'])}</td></tr>"
                   for i in items)
    return ("<table><thead><tr><th>guideline</th><th>item</th><th>status</th><th>evidence / what to write</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


# --------------------------------------------------------------------------- entry
def report_stage(cfg, run: RunDir, cohort, st: StageContext) -> Path:
    """Stage ``report``: ``report.html`` from whatever the run holds."""
    return build_report(run, cfg.report.dca_category, out=st)


def _undefined(values: dict, key: str):
    """A metric of the external table; an AUC that is undefined (None) says so."""
    v = values.get(key, "")
    return "undefined" if v is None and key.startswith("auc") else v


def _external_section(run: RunDir, development: str) -> str:
    """The frozen development model on this cohort: internal test vs external, and the shift check."""
    s = _read_json(run.classification_dir / SUMMARY) or {}
    internal, sources = s.get("development_internal_test") or {}, s.get("sources") or {}
    keys = list(internal) or sorted({k for v in sources.values() for k in v})
    header = ["metric", "development: internal test"] + [f"external: {m} masks" for m in sources]
    rows = [[k, internal.get(k, "")] + [_undefined(sources[m], k) for m in sources] for k in keys]
    parts = [f"<p>Development run <code>{html.escape(str(development))}</code>, model "
             f"<b>{html.escape(str(s.get('model')))}</b>, applied unchanged (nothing refitted).</p>",
             external_note(s),
             _table(rows, header) if rows else "<p class='muted'>The external cohort has no labels: no metrics.</p>"]
    for name in ("metrics_predicted.json", "metrics.json"):
        m = _read_json(run.classification_dir / name) or {}
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
    shift = _read_json(run.classification_dir / "shift.json") or {}
    warns = shift.get("warnings") or []
    parts.append("<h3>Shift check</h3>" + ("".join(f"<p class='warn'>{html.escape(w)}</p>" for w in warns)
                                           or "<p class='ok'>No shift flagged.</p>"))
    flagged = [r for r in shift.get("cohort", []) if r.get("flag")]
    if flagged:
        parts.append(_table([[r.get("kind"), r.get("item"), r.get("development"), r.get("external"), r.get("shift")]
                             for r in flagged], ["kind", "item", "development", "external", "shift"]))
    for source, comp in (shift.get("features_by_mask_source") or {}).items():
        feats = comp.get("features") or []
        head = f"<h3>Selected features, {html.escape(source)} masks: {html.escape(comp.get('compared', ''))}</h3>"
        if not feats:
            parts.append(head + f"<p class='muted'>{html.escape(comp.get('skipped', 'no features'))}</p>")
            continue
        cols = [c for c in ("feature", "smd", "ks_stat", "ks_p", "dev_median", "ext_median", "flag") if c in feats[0]]
        parts.append(head + f"<p class='muted'>{sum(1 for f in feats if f.get('flag'))} of {len(feats)} flagged; "
                     "largest shift first</p>" + _table([[f.get(c) for c in cols] for f in feats[:15]], cols))
    return "".join(parts)


def build_report(run: RunDir, dca_category: int | None = 6, out: Layout | None = None,
                 external: str | None = None) -> Path:
    """Write ``report.html`` (self-contained) from the run's artifacts into ``out`` (default: the run);
    with ``external`` (the development run), ``external_report.html`` of an external validation."""
    out = out if out is not None else run
    info = run.read_run_json()
    fp = _read_json(run.fingerprint)
    splits = _read_json(run.splits)
    config_text = run.config_yaml.read_text(encoding="utf-8") if run.config_yaml.is_file() else ""
    cfg = yaml.safe_load(config_text) or {} if config_text else {}
    models = list(cfg.get("classification", {}).get("models", MODELS))
    dca_html, has_dca = _dca_section(run, dca_category, out)
    counts = _read_json(run.features_dir("manual") / COLUMN_COUNTS) or {}
    facts = {"run": info, "fingerprint": fp or {}, "splits": splits or {}, "config": cfg,
             "seg_metrics": _read_json(run.seg_metrics()) or {},
             "cls_metrics": _read_json(run.classification_dir / METRICS) or {},
             "cls_predicted": _read_json(run.classification_dir / METRICS_PREDICTED) or {},
             "feature_counts": {k: v for k, v in counts.items() if k != "total"}, "dca": has_dca,
             "external": external}
    sections = [
        *([("external", "External validation", _external_section(run, external))] if external else []),
        ("summary", "Run summary and provenance", _summary_section(run, info)),
        ("cohort", "Cohort fingerprint and split", _cohort_section(run, fp, splits)),
        *table1_sections(run),  # classification/table1.csv: report/paper_results.py
        ("segmentation", "Lesion segmentation (CRFE)", _segmentation_section(run)),
        *recipe_sections(run),  # plan, test-time augmentation, fold ensemble: report/segmentation_recipe.py
        ("features", "Radiomics, histogram and clinical features", _features_section(run)),
        ("classification", "Pathological-type classification", _classification_section(run, models)),
        *results_sections(run),  # calibration, binary sub-tasks, sources: report/paper_results.py
        *harmonization_sections(run),  # data.batch_column: report/harmonization.py
        ("masks", "Test metrics: manual vs predicted masks", _manual_vs_predicted(run, models)),
        *robustness_sections(run, out),  # features.robustness on: report/robustness.py
        ("dca", "Decision-curve analysis", dca_html),
        ("checklist", "TRIPOD+AI / CLEAR checklist", _checklist_section(build_checklist(facts))),
        ("config", "Resolved configuration", f"<pre>{html.escape(config_text)}</pre>"),
    ]
    nav = "".join(f'<a href="#{a}">{html.escape(t.split(" (")[0])}</a>' for a, t, _ in sections)
    body = "".join(_section(a, t, b) for a, t, b in sections)
    kind = "external validation" if external else "report"
    title = f"cervirad {kind}: {html.escape(run.path.name)}"
    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>"
           f"<header><h1>{title}</h1><p>config {html.escape(str(info.get('config_hash')))} · cervirad "
           f"{html.escape(str(info.get('cervirad_version')))} · git {html.escape(str(info.get('git_commit')))}</p></header>"
           f"<nav>{nav}</nav><main><p class='note'>Research tool, not a medical device. Results on the synthetic demo "
           f"cohort say nothing about patients.</p>{body}</main></body></html>")
    return write_text(out.external_report if external else out.report, doc)
