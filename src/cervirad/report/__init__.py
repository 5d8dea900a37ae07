"""One self-contained ``report.html`` per run: every figure embedded, nothing fetched.

The report reads the run directory's artifacts (it never recomputes a stage): provenance
from ``run.json``, the cohort fingerprint and split, segmentation metrics and figures,
feature counts, classification metrics and figures, manual-vs-predicted test metrics, a
decision curve for one category, and a TRIPOD+AI / CLEAR checklist. This module assembles
the page; each section is built by its own module, and every table and figure by
:mod:`.markup`.
"""
from __future__ import annotations

import html
from pathlib import Path

import yaml

from ..classifiers import CLASSIFIERS
from ..files import write_text
from ..layout import COLUMN_COUNTS, METRICS, METRICS_PREDICTED, Layout
from ..rundir import StageContext
from .artifacts import read_optional
from .checklist import build_checklist, checklist_table
from .classification_results import classification_section, manual_vs_predicted
from .dca import dca_section
from .external_validation import external_section
from .feature_icc import icc_sections
from .harmonization import harmonization_sections
from .markup import Section
from .overview import cohort_section, features_section, summary_section
from .paper_results import results_sections, table1_sections
from .segmentation_results import segmentation_section
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


# --------------------------------------------------------------------------- entry
def report_stage(cfg, inputs: Layout, st: StageContext) -> Path:
    """Stage ``report``: ``report.html`` from whatever the run holds (``inputs``: the artifacts it declares)."""
    return build_report(inputs, cfg.report.dca_category, out=st)


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _page(run: Layout, info: dict, sections: list[Section], external: str | None) -> str:
    """The HTML document: header, navigation, the sections."""
    nav = "".join(f'<a href="#{a}">{html.escape(t.split(" (")[0])}</a>' for a, t, _ in sections)
    body = "".join(_section(a, t, b) for a, t, b in sections)
    kind = "external validation" if external else "report"
    title = f"cervirad {kind}: {html.escape(run.root.name)}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>"
            f"<header><h1>{title}</h1><p>config {html.escape(str(info.get('config_hash')))} · cervirad "
            f"{html.escape(str(info.get('cervirad_version')))} · git {html.escape(str(info.get('git_commit')))}</p></header>"
            f"<nav>{nav}</nav><main><p class='note'>Research tool, not a medical device. Results on the synthetic demo "
            f"cohort say nothing about patients.</p>{body}</main></body></html>")


def build_report(run: Layout, dca_category: int | None = 6, out: Layout | None = None,
                 external: str | None = None) -> Path:
    """Write ``report.html`` (self-contained) from the run's artifacts into ``out`` (default: the run);
    with ``external`` (the development run), ``external_report.html`` of an external validation.
    ``run`` names the artifacts and reads the run's record (``read_run_json``): a
    :class:`~cervirad.rundir.RunDir`, or the report stage's declared inputs."""
    out = out if out is not None else run
    info = run.read_run_json()
    fp = read_optional(run.fingerprint)
    splits = read_optional(run.splits)
    config_text = run.config_yaml.read_text(encoding="utf-8") if run.config_yaml.is_file() else ""
    cfg = yaml.safe_load(config_text) or {} if config_text else {}
    models = list(cfg.get("classification", {}).get("models", tuple(CLASSIFIERS)))
    dca_html, has_dca = dca_section(run, dca_category, out)
    counts = read_optional(run.features_dir("manual") / COLUMN_COUNTS) or {}
    facts = {"run": info, "fingerprint": fp or {}, "splits": splits or {}, "config": cfg,
             "seg_metrics": read_optional(run.seg_metrics()) or {},
             "cls_metrics": read_optional(run.classification_dir / METRICS) or {},
             "cls_predicted": read_optional(run.classification_dir / METRICS_PREDICTED) or {},
             "feature_counts": {k: v for k, v in counts.items() if k != "total"}, "dca": has_dca,
             "external": external}
    sections = [
        *([("external", "External validation", external_section(run, external))] if external else []),
        ("summary", "Run summary and provenance", summary_section(run, info)),
        ("cohort", "Cohort fingerprint and split", cohort_section(run, fp, splits)),
        *table1_sections(run),  # classification/table1.csv: report/paper_results.py
        ("segmentation", "Lesion segmentation (CRFE)", segmentation_section(run)),
        *recipe_sections(run),  # plan, test-time augmentation, fold ensemble: report/segmentation_recipe.py
        ("features", "Radiomics, histogram and clinical features", features_section(run)),
        ("classification", "Pathological-type classification", classification_section(run, models)),
        *results_sections(run),  # calibration, binary sub-tasks, sources: report/paper_results.py
        *harmonization_sections(run),  # data.batch_column: report/harmonization.py
        ("masks", "Test metrics: manual vs predicted masks", manual_vs_predicted(run, models)),
        *icc_sections(run, out),  # features.robustness on: report/feature_icc.py
        ("dca", "Decision-curve analysis", dca_html),
        ("checklist", "TRIPOD+AI / CLEAR checklist", checklist_table(build_checklist(facts))),
        ("config", "Resolved configuration", f"<pre>{html.escape(config_text)}</pre>"),
    ]
    return write_text(out.external_report if external else out.report, _page(run, info, sections, external))
