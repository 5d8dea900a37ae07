"""TRIPOD+AI / CLAIM / CLEAR reporting checklist, every status derived from the run.

Each item is (guideline reference, item, status, evidence). The status comes from the run's
configuration and artifacts, never a constant: ``filled`` when they document the item (the
evidence says what they say - e.g. the class-imbalance item reads ``classification.smote``),
``missing`` when the run should know but the artifact is absent, ``user`` when only the study team
can answer, ``not_reported`` for the statements the config holds for the study team
(``report.annotation_protocol``, ``report.annotators``, ``report.inter_reader_agreement``,
``report.sample_size_statement``) while they are empty.

References follow the published TRIPOD+AI list (Collins et al., BMJ 2024;385:e078378;
:data:`TRIPOD_AI`, checked by :func:`check_references`), CLAIM 2020 (Mongan et al., Radiol Artif
Intell 2020) and CLEAR (Kocak et al., Insights Imaging 2023). :func:`checklist_table` is the report's
section.
"""
from __future__ import annotations

import re
from typing import Any

from .markup import Classed, table

# the published TRIPOD+AI items (number -> topic)
TRIPOD_AI = {
    "1": "title", "2": "abstract", "3a": "healthcare context and rationale", "3b": "target population and intended "
    "purpose", "3c": "health inequalities", "4": "objectives", "5a": "data sources", "5b": "dates of data collection",
    "6a": "setting", "6b": "eligibility criteria", "6c": "treatments received", "7": "data preparation",
    "8a": "outcome definition", "8b": "outcome assessor qualifications", "8c": "outcome assessment blinding",
    "9a": "choice of initial predictors", "9b": "predictor definition and measurement",
    "9c": "predictor assessor qualifications", "10": "sample size", "11": "missing data",
    "12a": "how the data were used (partitioning)", "12b": "predictor handling", "12c": "model type, building steps, "
    "hyperparameter tuning, internal validation", "12d": "heterogeneity across clusters",
    "12e": "performance measures", "12f": "model updating", "12g": "how predictions were calculated (evaluation)",
    "13": "class imbalance", "14": "fairness", "15": "model output", "16": "training versus evaluation differences",
    "17": "ethical approval", "18a": "funding", "18b": "conflicts of interest", "18c": "protocol", "18d":
    "registration", "18e": "data sharing", "18f": "code sharing", "19": "patient and public involvement",
    "20a": "participant flow", "20b": "participant characteristics", "20c": "development vs evaluation data",
    "21": "model development (participants, events)", "22": "model specification", "23a": "model performance",
    "23b": "performance heterogeneity", "24": "model updating results", "25": "interpretation", "26": "limitations",
    "27a": "usability: poor quality or unavailable input data", "27b": "usability: user interaction",
    "27c": "future research",
}
STATUSES = ("filled", "missing", "user", "not_reported")


def _has(d: dict, *keys: str) -> bool:
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] in (None, {}, []):
            return False
        d = d[k]
    return True


def tripod_refs(ref: str) -> list[str]:
    """The TRIPOD+AI item numbers a checklist reference names ('TRIPOD+AI 12c / CLEAR 25' -> ['12c'])."""
    m = re.search(r"TRIPOD\+AI ([0-9a-z, ]+)", ref)
    return [] if not m else [r.strip() for r in m.group(1).split(",") if r.strip()]


def check_references(items: list[dict]) -> None:
    """Every TRIPOD+AI number in the checklist exists in the published list (ValueError otherwise)."""
    bad = [(i["ref"], r) for i in items for r in tripod_refs(i["ref"]) if r not in TRIPOD_AI]
    if bad:
        raise ValueError(f"checklist references not in the published TRIPOD+AI list: {bad}")


def _stage_done(run: dict, name: str) -> bool:
    return (run.get("stages", {}).get(name) or {}).get("status") == "done"


def _statement(text: Any) -> tuple[bool | str, str]:
    """A config statement of the study team: (filled, text) or ('not_reported', what to write)."""
    return (True, str(text)) if str(text or "").strip() else ("not_reported", "")


def build_checklist(facts: dict[str, Any]) -> list[dict[str, str]]:
    """Items with status ``filled`` / ``missing`` / ``user`` / ``not_reported`` from the collected run facts."""
    run, fp, splits = facts.get("run", {}), facts.get("fingerprint", {}), facts.get("splits", {})
    seg, cls, feat, cfg = (facts.get("seg_metrics", {}), facts.get("cls_metrics", {}), facts.get("feature_counts", {}),
                           facts.get("config", {}))
    pred = facts.get("cls_predicted") or {}
    cc, pp, rep = cfg.get("classification", {}) or {}, cfg.get("preprocess", {}) or {}, cfg.get("report", {}) or {}
    smote = cc.get("smote", True)
    size_known, size_text = _statement(rep.get("sample_size_statement"))
    proto_known, proto_text = _statement(rep.get("annotation_protocol"))
    who_known, who_text = _statement(rep.get("annotators"))
    irr_known, irr_text = _statement(rep.get("inter_reader_agreement"))
    steps = ["impute", "drop constant", "scale"] + (["ICC filter"] if cc.get("min_icc") is not None else []) \
        + ["select"] + (["SMOTE"] if smote else []) + ["classifier"]
    items: list[tuple[str, str, bool | str | None, str]] = [
        ("TRIPOD+AI 1 / CLEAR 1", "Title identifies a diagnostic model, the target population and the outcome", None,
         "Write the title of your study."),
        ("TRIPOD+AI 3a", "Healthcare context and rationale", None,
         "State the clinical question (pathological typing of cervical cancer)."),
        ("TRIPOD+AI 5a, 5b / CLEAR 7", "Data sources and dates of data collection", None,
         "Describe where and when patients were imaged."),
        ("TRIPOD+AI 6b / CLEAR 8", "Eligibility criteria", None, "List inclusion and exclusion criteria."),
        ("TRIPOD+AI 7 / CLEAR 9", "Data preparation: image preprocessing", _has(cfg, "preprocess") and
         _stage_done(run, "preprocess"), f"Resampling to {pp.get('spacing')} mm, z-score ({pp.get('normalize')}), "
         f"{pp.get('slice_size')} px slices."),
        ("TRIPOD+AI 8a", "Outcome definition", bool(cls),
         "Pathologic_typing = 4*large + 2*non_keratinizing + 1*adenocarcinoma (categories 0..7)."),
        ("TRIPOD+AI 8c", "Outcome assessed blind to predictors", None, "State whether pathologists were blinded to imaging."),
        ("CLAIM 14, 17", "Reference standard: annotation protocol of the lesion masks", proto_known,
         proto_text or "not reported: set report.annotation_protocol (tool, sequence, delineation rules)."),
        ("CLAIM 16", "Annotators: number, qualifications and experience", who_known,
         who_text or "not reported: set report.annotators."),
        ("CLAIM 18", "Inter-/intra-reader agreement of the annotations", irr_known,
         irr_text or "not reported: set report.inter_reader_agreement (e.g. Dice between two readers on n patients)."),
        ("TRIPOD+AI 9b / CLEAR 17", "Predictors: definition and measurement", bool(feat),
         f"{sum(feat.values()) if feat else 0} features: " + ", ".join(f"{k} {v}" for k, v in feat.items())),
        ("TRIPOD+AI 10 / CLEAR 12", "Sample size: how it was arrived at", size_known,
         (size_text or "not reported: set report.sample_size_statement.")
         + f" Cohort: {fp.get('n_patients', '?')} patients; class counts {fp.get('class_counts', {})}."),
        ("TRIPOD+AI 11 / CLEAR 21", "Missing data handling", bool(cls),
         "Median imputation inside the training pipeline (fitted on training folds only)."),
        ("TRIPOD+AI 12a / CLEAR 23", "Data partition (patient-level, one split for every stage)", _has(splits, "train"),
         f"train/val/test = {len(splits.get('train', []))}/{len(splits.get('val', []))}/{len(splits.get('test', []))} "
         f"patients, seed {splits.get('seed')}, stratified by {splits.get('stratified_by')}."),
        ("TRIPOD+AI 12c / CLEAR 25", "Model building: feature selection and tuning inside training folds", bool(cls),
         f"One pipeline ({', '.join(steps)}) tuned by inner CV on training patients only; final model: "
         f"{cls.get('best_model_rule', 'see summary.json')}."),
        ("TRIPOD+AI 12c", "Model type and hyperparameters", _has(cfg, "classification"),
         f"models {cc.get('models')}, selectors {cc.get('selectors')}, k grid {cc.get('k_grid')}."),
        ("TRIPOD+AI 12e / CLEAR 31", "Performance measures with confidence intervals", _has(cls, "ci_method"),
         str(cls.get("ci_method", "No classification metrics in this run."))),
        ("TRIPOD+AI 12e, 23a", "Calibration", _has(cls, "calibration_definition"),
         f"Probabilities calibrated by '{cc.get('calibration')}'; {cls.get('calibration_definition', '')}"),
        ("TRIPOD+AI 9b / CLEAR 19", "Segmentation (the predictors' masks) and its performance", bool(seg),
         "CRFE network; Dice, IoU, HD95 on test patients with CIs." if seg else "No segmentation metrics in this run."),
        ("TRIPOD+AI 13 / CLEAR 37", "Class imbalance handling", bool(cc),
         ("SMOTE inside training folds only (k adapted to the smallest class), probabilities corrected by "
          f"'{cc.get('calibration')}'." if smote else
          "No resampling (classification.smote: false): the classifiers see the training class mix as it is.")),
        ("TRIPOD+AI 20a / CLEAR 40", "Participant flow and characteristics",
         True if _has(cls, "table1_file") else None,
         "Table 1 per split and class (classification/table1.csv, in this report); add the flow diagram."
         if _has(cls, "table1_file") else "Provide a flow diagram and Table 1 of your cohort."),
        ("TRIPOD+AI 23a", "Performance of the deployable pipeline (predicted masks), every test patient counted",
         bool(pred), (f"End to end on {pred.get('n_eval_patients')} test patients, {pred.get('n_failed_masks', 0)} "
                      f"without predicted-mask features ({pred.get('failed_mask_scoring', '')})." if pred else
                      "No features from predicted masks in this run.")),
        ("TRIPOD+AI 12e, 23a / CLEAR 52", "Clinical utility", _has(facts, "dca"), "Decision-curve analysis for one category."),
        ("TRIPOD+AI 16, 20c", "External evaluation: differences between development and evaluation data",
         True if facts.get("external") else None,
         f"Frozen model of run {facts['external']} applied unchanged to this cohort; shift check by mask source "
         "(external_report.html)." if facts.get("external") else "This run has an internal test split only; "
         "validate externally (`cervirad evaluate`)."),
        ("TRIPOD+AI 27a", "Handling of unavailable input data (a failed segmentation)", bool(pred) or None,
         "A patient whose predicted mask gives no features is scored from the training class prior and counted."
         if pred else "Describe how missing inputs are handled in use."),
        ("TRIPOD+AI 17", "Ethics approval and consent", None, "State the approving board and consent procedure."),
        ("TRIPOD+AI 18f / CLEAR 54", "Code and software availability", bool(run.get("cervirad_version")),
         f"cervirad {run.get('cervirad_version')}, git {run.get('git_commit')}; package versions in run.json."),
        ("TRIPOD+AI 26 / CLEAR 55", "Limitations", None,
         "Write them; the run suggests: research tool, not a medical device; "
         f"{cls.get('n_eval_patients', '?')} test patients give wide intervals."),
    ]
    out = []
    for ref, item, known, evidence in items:
        status = ("user" if known is None else known if isinstance(known, str) else "filled" if known else "missing")
        out.append({"ref": ref, "item": item, "status": status, "evidence": evidence})
    check_references(out)
    return out


STATUS_CSS = {"filled": "ok", "user": "warn", "missing": "bad", "not_reported": "bad"}
STATUS_LABEL = {"filled": "filled from the run", "user": "TO COMPLETE by the study team",
                "missing": "missing in this run", "not_reported": "not reported (config field empty)"}


def checklist_table(items: list[dict]) -> str:
    """The checklist as the report shows it: reference, item, status (coloured) and evidence."""
    rows = [[i["ref"], i["item"], Classed(STATUS_CSS[i["status"]], STATUS_LABEL[i["status"]]), i["evidence"]]
            for i in items]
    return table(rows, ["guideline", "item", "status", "evidence / what to write"])
