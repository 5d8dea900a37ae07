"""The report's first sections: the run (provenance, stages, package versions), the cohort (fingerprint,
the one split, the categories) and the features extracted (columns per category, failed cases).

Reads ``run.json``, ``fingerprint.json``, ``splits.json``, ``preprocess/summary.json`` and the manual
feature folder (``column_counts.json``, ``errors.csv``, the table's labels).
"""
from __future__ import annotations

import html

import pandas as pd

from ..layout import COLUMN_COUNTS, ERRORS, Layout
from ..pathology import CATEGORY_NAMES, LABEL
from .artifacts import read_optional
from .markup import cell, df_table, table


def summary_section(run: Layout, info: dict) -> str:
    stages = info.get("stages", {})
    rows = [[name, rec.get("status", "?") if name != "report" else "this page", rec.get("seconds", ""),
             rec.get("finished", rec.get("started", "")), (rec.get("error") or "")[:140]] for name, rec in stages.items()]
    prov = [["run directory", str(run.root)], ["cervirad", info.get("cervirad_version")],
            ["git commit", info.get("git_commit")], ["config hash", info.get("config_hash")],
            ["created", info.get("created")], ["seeds", info.get("seeds")], ["python", info.get("python")]]
    pk = [[k, v] for k, v in (info.get("packages") or {}).items()]
    return (table(prov, ["provenance", ""]) + "<h3>Stages</h3>" + table(rows, ["stage", "status", "seconds", "finished", "error"])
            + "<details><summary>Package versions</summary>" + table(pk, ["package", "version"]) + "</details>")


def cohort_section(run: Layout, fp: dict | None, splits: dict | None) -> str:
    if not fp:
        return "<p class='bad'>No fingerprint.json: run <code>cervirad validate</code>.</p>"
    parts = [f"<p>{fp.get('n_patients')} patients, {fp.get('n_with_mask')} with a lesion mask; lesion volume (ml) "
             f"{cell(fp.get('lesion_volume_ml'))}.</p>"]
    seq_rows = [[s, d.get("spacing_median"), d.get("size_median"), d.get("intensity_p50_median")]
                for s, d in fp.get("sequences", {}).items()]
    parts.append(table(seq_rows, ["sequence", "median spacing (mm)", "median size", "median intensity"]))
    if fp.get("warnings"):
        parts.append("<p class='muted'>" + "<br>".join(html.escape(w) for w in fp["warnings"]) + "</p>")
    if splits:
        labels = _labels(run)
        cats = sorted({labels[p] for p in labels}) if labels else []
        rows = []
        for part in ("train", "val", "test"):
            ids = splits.get(part, [])
            rows.append([part, len(ids)] + [sum(1 for p in ids if labels.get(p) == c) for c in cats])
        parts.append("<h3>The one patient-level split (splits.json)</h3>")
        parts.append(table(rows, ["split", "patients"] + [f"cat {c}" for c in cats]))
        pp = read_optional(run.preprocess_summary)
        if pp:
            srows = [[k, v["patients"], v["slices"], v["with_lesion"], v["without_lesion"]] for k, v in pp["per_split"].items()]
            parts.append(table(srows, ["split", "patients", "slices", "with lesion", "without lesion"]))
    if fp.get("class_counts"):
        parts.append("<h3>Categories (Pathologic_typing)</h3>")
        parts.append(table([[k, CATEGORY_NAMES.get(int(k), "?"), v] for k, v in fp["class_counts"].items()],
                           ["category", "meaning", "patients"]))
    return "".join(parts)


def _labels(run: Layout) -> dict[str, int]:
    p = run.features_table("manual")
    if not p.is_file():
        return {}
    df = pd.read_parquet(p, columns=["patient_id", LABEL])
    return dict(zip(df.patient_id.astype(str), df[LABEL].astype(int)))


def features_section(run: Layout) -> str:
    d = run.features_dir("manual")
    if not d.is_dir():
        return "<p class='muted'>Features were not extracted.</p>"
    parts = []
    counts = read_optional(d / COLUMN_COUNTS)
    if counts:
        rows = [[k, v] for k, v in counts.items() if k != "total"]
        parts.append(table(rows + [["total", counts["total"]]], ["category", "columns"]))
    err = d / ERRORS
    if err.is_file():
        e = pd.read_csv(err)
        parts.append(f"<p>{len(e)} case(s) failed extraction.</p>" + (df_table(e, max_rows=60) if len(e) else ""))
    return "".join(parts)
