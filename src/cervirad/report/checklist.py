"""TRIPOD+AI / CLEAR reporting checklist, pre-filled from what the run knows.

Each item is (guideline reference, item, status, evidence). Status is ``filled`` when the
run directory documents it, ``user`` when only the study team can answer (marked for the
user in the report), ``missing`` when the run should know but the artifact is absent.
"""
from __future__ import annotations

from typing import Any


def _has(d: dict, *keys: str) -> bool:
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] in (None, {}, []):
            return False
        d = d[k]
    return True


def build_checklist(facts: dict[str, Any]) -> list[dict[str, str]]:
    """Items with status ``filled`` / ``user`` / ``missing`` from the collected run facts."""
    run, fp, splits = facts.get("run", {}), facts.get("fingerprint", {}), facts.get("splits", {})
    seg, cls, feat, cfg = facts.get("seg_metrics", {}), facts.get("cls_metrics", {}), facts.get("feature_counts", {}), facts.get("config", {})
    items: list[tuple[str, str, bool | None, str]] = [
        ("TRIPOD+AI 1 / CLEAR 1", "Title identifies a diagnostic model, the target population and the outcome", None,
         "Write the title of your study."),
        ("TRIPOD+AI 3a", "Medical context and rationale", None, "State the clinical question (pathological typing of cervical cancer)."),
        ("TRIPOD+AI 5a / CLEAR 7", "Data sources and dates of enrolment", None, "Describe where and when patients were imaged."),
        ("TRIPOD+AI 6a / CLEAR 8", "Eligibility criteria", None, "List inclusion and exclusion criteria."),
        ("TRIPOD+AI 7 / CLEAR 9", "Data preparation: image preprocessing",
         _has(cfg, "preprocess"), f"Resampling to {cfg.get('preprocess', {}).get('spacing')} mm, z-score "
         f"({cfg.get('preprocess', {}).get('normalize')}), {cfg.get('preprocess', {}).get('slice_size')} px slices."),
        ("TRIPOD+AI 8a", "Outcome definition", True,
         "Pathologic_typing = 4*large + 2*non_keratinizing + 1*adenocarcinoma (categories 0..7)."),
        ("TRIPOD+AI 8c", "Outcome assessed blind to predictors", None, "State whether pathologists were blinded to imaging."),
        ("TRIPOD+AI 9a / CLEAR 17", "Predictors: definition and measurement", bool(feat),
         f"{sum(feat.values()) if feat else 0} features: " + ", ".join(f"{k} {v}" for k, v in feat.items())),
        ("TRIPOD+AI 10 / CLEAR 12", "Sample size", _has(fp, "n_patients"),
         f"{fp.get('n_patients', '?')} patients; class counts {fp.get('class_counts', {})}."),
        ("TRIPOD+AI 11 / CLEAR 21", "Missing data handling", True,
         "Median imputation inside the training pipeline (fitted on training folds only)."),
        ("TRIPOD+AI 12a / CLEAR 23", "Data partition (patient-level, one split for every stage)", _has(splits, "train"),
         f"train/val/test = {len(splits.get('train', []))}/{len(splits.get('val', []))}/{len(splits.get('test', []))} "
         f"patients, seed {splits.get('seed')}, stratified by {splits.get('stratified_by')}."),
        ("TRIPOD+AI 12b / CLEAR 25", "Feature selection and model tuning inside training folds", True,
         "One imbalanced-learn Pipeline (impute, drop constant, scale, select, SMOTE, classifier) tuned by "
         "GridSearchCV on training patients only."),
        ("TRIPOD+AI 12c", "Model type and hyperparameters", _has(cfg, "classification"),
         f"models {cfg.get('classification', {}).get('models')}, selectors {cfg.get('classification', {}).get('selectors')}, "
         f"k grid {cfg.get('classification', {}).get('k_grid')}."),
        ("TRIPOD+AI 12e / CLEAR 31", "Performance measures with confidence intervals", bool(cls),
         "Bootstrap 95 % CIs over test patients for every metric."),
        ("TRIPOD+AI 14 / CLEAR 19", "Segmentation method and its performance", bool(seg),
         "CRFE network; Dice, IoU, HD95 on test patients with CIs." if seg else "No segmentation metrics in this run."),
        ("TRIPOD+AI 18 / CLEAR 37", "Class imbalance handling", True, "SMOTE inside training folds only (k adapted to the smallest class)."),
        ("TRIPOD+AI 20a", "Participant flow and characteristics", True if _has(cls, "table1_file") else None,
         "Table 1 per split and class (classification/table1.csv, in this report); add the flow diagram."
         if _has(cls, "table1_file") else "Provide a flow diagram and Table 1 of your cohort."),
        ("TRIPOD+AI 23a / CLEAR 52", "Clinical utility", _has(facts, "dca"), "Decision-curve analysis for one category."),
        ("TRIPOD+AI 25 / CLEAR 54", "Code and software availability", True,
         f"cervirad {run.get('cervirad_version')}, git {run.get('git_commit')}; package versions in run.json."),
        ("TRIPOD+AI 24", "External validation", True if facts.get("external") else None,
         f"Frozen model of run {facts['external']} applied unchanged to this cohort (external_report.html)."
         if facts.get("external") else "This run has an internal test split only; validate externally "
         "(`cervirad evaluate`)."),
        ("TRIPOD+AI 27", "Ethics approval and consent", None, "State the approving board and consent procedure."),
        ("TRIPOD+AI 21 / CLEAR 55", "Limitations and intended use", True,
         "Research tool, not a medical device; small test sets give wide CIs."),
    ]
    out = []
    for ref, item, known, evidence in items:
        status = "user" if known is None else "filled" if known else "missing"
        out.append({"ref": ref, "item": item, "status": status, "evidence": evidence})
    return out
