"""External validation: a finished run applied, unchanged, to a cohort from another hospital.

``cervirad evaluate --run RUN_DIR --config COHORT.yaml --out OUT_DIR`` walks
:data:`cervirad.stages.EXTERNAL_STAGES` in ``OUT_DIR`` with EVERYTHING frozen from ``RUN_DIR``:
the development run's resolved configuration (preprocessing, radiomics parameters, thresholds)
with only its ``data`` section replaced by the external cohort's, its CRFE checkpoint (with the
post-processing chosen at training), and its fitted, signed classifier (selection, scaling and
imputation inside it). Nothing is refitted.

Stages (functions below): ``validate`` (the usual one), ``segment-external`` (every patient
segmented on its own grid, each mask cached by the model and the patient's images, so a rerun
after adding patients segments only the new ones; segmentation metrics with CIs when manual
masks exist),
``features-external`` (predicted masks, and manual masks when every patient has one: the usual
feature stage), ``score-external`` (predictions, classification metrics with CIs for both mask
sources, calibration-in-the-large and slope, the shift check against the development cohort),
``report-external`` (``external_report.html``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .batch import BATCH
from .pathology import LABEL
from .config.schema import Config
from .errors import InputError
from .io import Cohort
from .files import read_json, write_json
from .layout import (METRICS, METRICS_PREDICTED, MODEL_CARD, MODEL_JOBLIB, PER_PATIENT, PREDICTIONS, PREDICTIONS_PREDICTED,
                     SHIFT, SUMMARY, Layout, case_file)
from .rundir import StageContext, read_run_json

log = logging.getLogger(__name__)


def require_finished(dev: Path) -> None:
    """RUN_DIR must be a finished run: a trained model and a classifier."""
    run = Layout(dev)
    if not run.run_json.is_file():
        raise InputError(f"'{dev}' is not a cervirad run folder (no run.json); pass the --run of a finished run-all.")
    stages = read_run_json(dev).get("stages", {})
    for stage, path in (("train-seg", run.seg_model()), ("classify", run.classification_dir / MODEL_JOBLIB)):
        if stages.get(stage, {}).get("status") != "done" or not path.is_file():
            raise InputError(f"Run '{dev}' has no finished '{stage}' stage ({path.name} missing); finish it with "
                             "`cervirad run-all` before evaluating it externally.")


# --------------------------------------------------------------------------- segment
def segment_stage(cfg: Config, inputs: Layout, st: StageContext, development: str) -> dict:
    """Every external patient (``inputs.cohort``) segmented by the frozen model; metrics where a manual mask
    exists."""
    from .dicom.export import export_case, is_series
    from .files import HashCache, hash_obj
    from .io import read_image, write_image, write_table
    from .progress import progress
    from .segmentation.infer import load_model, segment_volume
    from .segmentation.metrics import summarise
    from .segmentation.scoring import score_patient

    dev = Layout(development)
    cohort = inputs.cohort
    model = load_model(dev.seg_model(), cfg.segmentation.device)
    missing = [s for s in model.sequences if s not in cohort.sequences]
    if missing:
        raise InputError(f"The development model reads {model.sequences} but the external cohort has no "
                         f"{missing}; add those sequences to the external manifest (data.sequences).")
    rows, reused = [], 0
    cache = inputs.cache_dir("segment-external")
    hashes = HashCache(inputs.hash_cache)  # the orchestrator hashed these files for the stage key already
    model_hash = hashes.of(dev.seg_model())
    for p in progress(cohort.patients, len(cohort.patients), "segment external", "patient", log):
        target = case_file(st.masks_dir(), p.id, ".nii.gz")
        key = hash_obj([model_hash, [hashes.of(Path(p.images[s])) for s in model.sequences]])
        cached = case_file(cache, key, ".nii.gz")
        if cached.is_file():  # this patient's images and the model are unchanged: its mask is reused
            pred = read_image(cached, p.id, "cached mask")
            reused += 1
        else:
            images = [read_image(p.images[s], p.id, s) for s in model.sequences]
            pred = segment_volume(model, images, cfg.segmentation.infer_batch_size)
            write_image(pred, cached)
        write_image(pred, target)
        if is_series(p.images[model.sequences[0]]):  # segmentation.export: DICOM-SEG / RTSTRUCT beside it
            export_case(pred, p.images[model.sequences[0]], st.masks_dir(), p.id, cfg.segmentation.export)
        if p.mask is None:
            continue
        ref = read_image(p.images[model.sequences[0]], p.id, model.sequences[0])
        m, truth, pred_arr = score_patient(pred, ref, p.mask, p.id, cfg.data.mask_label)
        rows.append({"patient_id": p.id, "lesion_voxels": int(truth.sum()), "predicted_voxels": int(pred_arr.sum()),
                     **m})
    summary: dict = {"n_segmented": len(cohort.patients), "n_reused": reused, "model": str(dev.seg_model()),
                     "component_selection": model.component_selection}
    if rows:
        per_patient = pd.DataFrame(rows)
        write_table(per_patient, st.segmentation_dir() / PER_PATIENT)
        summary.update(summarise(per_patient, cfg.segmentation.bootstrap, cfg.run.seed))
    write_json(st.seg_metrics(), summary)
    st.info["n_segmented"] = len(cohort.patients)
    return summary


# --------------------------------------------------------------------------- features
def features_stage(cfg: Config, inputs: Layout, st: StageContext, development: str) -> None:
    """Features from the predicted masks; from the manual masks too when every patient has one."""
    from .features.stage import run_stage

    run_stage(cfg, inputs, inputs.cohort, st, "predicted")
    if all(p.mask is not None for p in inputs.cohort.patients):
        run_stage(cfg, inputs, inputs.cohort, st, "manual")


# --------------------------------------------------------------------------- score
def score_stage(cfg: Config, inputs: Layout, st: StageContext, development: str, harmonize: bool = False) -> dict:
    """Predict with the frozen classifier; metrics (both mask sources), calibration, shift check.
    ``harmonize`` (``evaluate --harmonize``): a scanner unseen in development gets ComBat estimates from
    its own patients (transductive, no labels) - else a harmonised model refuses it."""
    from .classification.predict import predict_table
    from .io import write_table

    dev, run = Layout(development), inputs
    out = st.classification_dir
    card = read_json(dev.classification_dir / MODEL_CARD)
    summary: dict = {"development_run": str(dev.root), "model": card["model"], "sources": {}}
    harmonization = _check_scanners(card, run, dev, cfg, harmonize)
    if harmonization:
        summary["harmonization"] = harmonization
    labels = _cohort_labels(inputs.cohort, cfg)
    for masks, metrics_name, pred_name in (("predicted", METRICS_PREDICTED, PREDICTIONS_PREDICTED),
                                           ("manual", METRICS, PREDICTIONS)):
        table = run.features_table(masks)
        if not table.is_file():
            continue
        df = _with_scanner(pd.read_parquet(table), card, cfg)
        absent = [c for c in card["feature_columns"] if c not in df.columns and c.startswith("clin_")]
        if absent:  # no clinical table: the development pipeline imputes them (its training medians)
            log.warning("evaluate: the external cohort has no %s; imputed by the development pipeline",
                        ", ".join(absent))
            df = df.assign(**{c: np.nan for c in absent})
            summary["imputed_clinical_columns"] = absent
        pred = _with_missing_patients(predict_table(dev.classification_dir, df, harmonize=harmonize), labels, card)
        write_table(pred, out / pred_name)
        if LABEL in pred.columns and pred[LABEL].notna().any():
            metrics = score_predictions(pred[pred[LABEL].notna()], card, cfg)
            if harmonization:
                metrics["harmonization"] = harmonization
            write_json(out / metrics_name, metrics)
            summary["sources"][masks] = {k: metrics[f"{card['model']}.{k}"]["value"]
                                         for k in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")}
            summary["sources"][masks]["n_without_features"] = metrics["n_without_prediction"]
    shift = shift_check(dev, run, card)
    pred_feats = pd.DataFrame((shift["features_by_mask_source"].get("predicted") or {}).get("features") or [])
    shift["warnings"] += _harmonization_hint(pred_feats, card, harmonization)
    for w in shift["warnings"]:
        log.warning("%s", w)
    write_json(out / SHIFT, shift)
    summary["shift_warnings"] = shift["warnings"]
    internal = dev.classification_dir / METRICS
    if internal.is_file():
        m = read_json(internal)
        summary["development_internal_test"] = {k: m.get(f"{card['model']}.{k}", {}).get("value")
                                                for k in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")}
    write_json(out / SUMMARY, summary)
    st.info["shift_warnings"] = len(shift["warnings"])
    return summary


def _with_scanner(df: pd.DataFrame, card: dict, cfg: Config) -> pd.DataFrame:
    """A harmonised model's external rows need a scanner: the cohort's ``batch`` column (data.batch_column),
    else one batch for the whole external cohort, named after it."""
    if not card.get("batch_levels") or BATCH in df.columns:
        return df
    return df.assign(**{BATCH: f"external: {cfg.run.name}"})


def _check_scanners(card: dict, run: Layout, dev: Layout, cfg: Config, harmonize: bool) -> dict:
    """For a harmonised model: which external scanners are known; unseen ones without ``--harmonize``
    are refused with one line naming the shifted features. Returns what the report shows ({} otherwise)."""
    from .shift import feature_shift

    levels = card.get("batch_levels")
    if not levels:
        if harmonize:
            raise InputError(f"evaluate --harmonize: the development model ({card['model']}) was trained without "
                             "ComBat (classification.harmonize: none), so there is nothing to re-estimate; retrain "
                             "with classification.harmonize: combat or drop --harmonize.")
        return {}
    ext = _with_scanner(pd.read_parquet(run.features_table("predicted")), card, cfg)
    counts = ext[BATCH].astype(str).value_counts().sort_index()
    unseen = [b for b in counts.index if b not in set(map(str, levels))]
    if unseen and not harmonize:
        dev_feat = pd.read_parquet(dev.features_table("manual"))
        dev_feat = dev_feat[dev_feat["split"].isin(["train", "val"])]
        selected = [f for f in card.get("selected_features", []) if f in ext.columns and f in dev_feat.columns]
        feats = feature_shift(dev_feat, ext, selected)
        shifted = feats[feats["flag"]]["feature"].tolist() if len(feats) else []
        raise InputError(f"evaluate: scanner(s) {unseen} ({int(counts[unseen].sum())} patient(s)) were not seen in "
                         f"development (ComBat knows {levels}); {len(shifted)} of {len(selected)} selected features "
                         f"are shifted (e.g. {', '.join(shifted[:3]) or 'none'}); pass --harmonize to estimate the "
                         "new scanner's ComBat parameters from its own images (transductive, no labels), or set the "
                         "external data.batch_column to a known scanner.")
    return {"mode": "transductive" if unseen else "development estimates",
            "scanners": {str(b): int(n) for b, n in counts.items()}, "unseen_in_development": unseen,
            "note": ("ComBat parameters of the unseen scanner(s) estimated from the external patients' own features "
                     "(no labels), the model otherwise frozen: a transductive estimate" if unseen else
                     "every external scanner was seen in development: its frozen ComBat estimates are applied")}


def _harmonization_hint(feats: pd.DataFrame, card: dict, harmonization: dict) -> list[str]:
    """The shift check's line on harmonisation: which shifted features ComBat would address."""
    if feats is None or not len(feats) or not feats["flag"].any():
        return []
    shifted = feats[feats["flag"]]["feature"].tolist()
    names = ", ".join(shifted[:8]) + (f" and {len(shifted) - 8} more" if len(shifted) > 8 else "")
    if harmonization.get("mode") == "transductive":
        return [f"shift: harmonisation — the {len(shifted)} shifted feature(s) ({names}) were harmonised "
                "transductively (evaluate --harmonize; values above are before ComBat)"]
    if not card.get("batch_levels"):
        return [f"shift: harmonisation — {len(shifted)} selected feature(s) would need scanner harmonisation: "
                f"{names} "
                "(train with classification.harmonize: combat and data.batch_column, then evaluate --harmonize)"]
    return []


def _cohort_labels(cohort: Cohort | None, cfg: Config) -> dict[str, object]:
    """Pathologic_typing of every cohort patient the clinical table labels ({} without one)."""
    if cohort is None or getattr(cohort, "clinical", None) is None:
        return {}
    from .pathology import pathologic_typing

    try:
        y = pathologic_typing(cohort.clinical.drop_duplicates(cfg.data.id_column), cfg.data)
    except Exception as e:  # noqa: BLE001 - a cohort without the label columns has no labels to add
        log.info("evaluate: no labels for patients without features (%s)", e)
        return {}
    return {str(pid): int(y[pid]) for pid in cohort.ids if pid in y.index}


def _with_missing_patients(pred: pd.DataFrame, labels: dict, card: dict) -> pd.DataFrame:
    """Every labelled cohort patient stays a row: one whose mask gave no features (failed or empty mask) is
    added with an empty prediction; :func:`score_predictions` scores it from the development prior."""
    id_col = card["id_column"]
    have = set(pred[id_col].astype(str))
    missing = [pid for pid in labels if pid not in have]
    if not missing:
        return pred
    log.warning("evaluate: %d patient(s) have no features from this mask source (e.g. '%s'); %s", len(missing),
                missing[0], FAILED_MASK_SCORING)
    add = pd.DataFrame({id_col: missing, "predicted": [None] * len(missing),
                        "warning": ["no features (segmentation or extraction failed)"] * len(missing)})
    if LABEL in pred.columns or labels:
        add[LABEL] = [labels[p] for p in missing]
    return pd.concat([pred, add], ignore_index=True)


def shift_check(dev: Layout, run: Layout, card: dict) -> dict:
    """The cohorts, then the selected features - each mask source compared with its own kind, so site and
    mask source are not confounded: development manual masks (fitting patients) vs external manual masks,
    and development predicted masks vs external predicted masks. The development run extracts predicted-mask
    features for its TEST patients only (no out-of-fold predicted masks of its fitting patients exist), so the
    predicted-vs-predicted comparison uses the development test patients, and says so."""
    from .shift import clinical_shift, feature_shift, fingerprint_shift
    from .shift_warnings import shift_warnings

    dev_fp = read_json(dev.fingerprint)
    ext_fp = read_json(run.fingerprint)
    rows = fingerprint_shift(dev_fp, ext_fp)
    dev_manual = pd.read_parquet(dev.features_table("manual"))
    dev_fit = dev_manual[dev_manual["split"].isin(["train", "val"])]
    ext_any = pd.read_parquet(run.features_table("predicted"))
    clinical = [c for c in dev_fit.columns if c.startswith("clin_") and c in ext_any.columns]
    rows += clinical_shift(dev_fit, ext_any, clinical)  # clinical variable ranges (a cohort without a table: none)
    comparisons, warnings = {}, []
    pairs = [("manual", dev_fit, run.features_table("manual"),
              "development manual masks (fitting patients) vs external manual masks"),
             ("predicted", _dev_predicted(dev), run.features_table("predicted"),
              "development predicted masks (its TEST patients: the run has no out-of-fold predicted masks of its "
              "fitting patients) vs external predicted masks")]
    for source, dev_feat, ext_path, what in pairs:
        if dev_feat is None or not ext_path.is_file():
            comparisons[source] = {"compared": what, "skipped": "no features of this mask source on both sides"}
            continue
        ext_feat = pd.read_parquet(ext_path)
        selected = [f for f in card.get("selected_features", []) if f in ext_feat.columns and f in dev_feat.columns]
        feats = feature_shift(dev_feat, ext_feat, selected)
        comparisons[source] = {"compared": what, "n_development": int(len(dev_feat)), "n_external": int(len(ext_feat)),
                               "features": feats.to_dict(orient="records")}
        warnings += [f"{source} masks: {w}" for w in shift_warnings([], feats)]
    warnings = shift_warnings(rows) + warnings
    return {"cohort": rows, "features_by_mask_source": comparisons, "warnings": warnings}


def _dev_predicted(dev: Layout) -> pd.DataFrame | None:
    p = dev.features_table("predicted")
    return pd.read_parquet(p) if p.is_file() else None


def score_predictions(pred: pd.DataFrame, card: dict, cfg: Config) -> dict:
    """Metrics of the frozen model's predictions with the classify stage's intervals; classes unseen in development
    get a zero-probability column (scored, and listed); a patient without a prediction is scored from the
    development training prior and counted; calibration by the classify stage's one definition."""
    from .classification.calibration import CALIBRATION_DEFINITION, flat_calibration
    from .classification.metrics import (AUC_MACRO_DEFINITION, CI_METHODS, HEADLINE, ci_method, flatten,
                                          metric_intervals)

    dev_classes = list(card["class_codes"])
    truth = pred[LABEL].tolist()
    unseen = sorted({t for t in truth if t not in dev_classes}, key=str)
    classes = np.asarray(dev_classes + unseen, dtype=object)
    ok = pred["predicted"].notna().to_numpy()
    P = np.zeros((len(pred), len(classes)))
    for j, c in enumerate(classes):
        col = f"prob_{c}"
        if col in pred.columns:
            P[ok, j] = pred.loc[ok, col].to_numpy(dtype=float)
    P[~ok] = _prior(card, classes)
    code = {c: i for i, c in enumerate(classes)}
    y = np.array([code[t] for t in np.asarray(truth, dtype=object)])
    ids = pred[card["id_column"]].astype(str).to_numpy()
    model = card["model"]
    n_boot = cfg.classification.bootstrap
    metrics = flatten(model, metric_intervals(y, [P], ids, n_boot, cfg.run.seed), classes,
                      np.bincount(y, minlength=len(classes)))
    why = undefined_aucs(y, classes, len(dev_classes))  # per class: auc_ovr already gives none (NaN -> null)
    if "macro" in why:  # no class the model scores has positives and negatives: no AUC at all, never "0.5"
        metrics[f"{model}.auc_macro"].update(value=None, ci_low=None, ci_high=None, n_boot_valid=0)
    known = np.array([c in dev_classes for c in classes])
    metrics.update(flat_calibration(model, y, P, classes, known, min(n_boot, 500), cfg.run.seed, ids))
    for k in HEADLINE:
        metrics[f"best.{k}"] = metrics[f"{model}.{k}"]
    cal = card.get("calibration") or {"method": (card.get("config") or {}).get("calibration", "none")}
    metrics.update({
        "auc_undefined": why,
        "best_model": model, "n_eval_patients": int(len(np.unique(ids))), "n_without_prediction": int((~ok).sum()),
        "patients_without_prediction": [str(i) for i in ids[~ok]], "without_prediction_scoring": FAILED_MASK_SCORING,
        "classes_unseen_in_development": [_plain(c) for c in unseen],
        "classes_absent_externally": [_plain(c) for c in dev_classes if c not in set(truth)],
        "auc_macro_definition": AUC_MACRO_DEFINITION, "ci_method": ci_method(n_boot), "ci_methods": CI_METHODS,
        "calibration_method": cal["method"], "calibration_definition": CALIBRATION_DEFINITION,
    })
    return metrics


def undefined_aucs(y: np.ndarray, classes: np.ndarray, n_dev: int) -> dict[str, str]:
    """Why an AUC is undefined, by class (its label) and for ``macro``: a class with no positives or no
    negatives among the external patients has no one-vs-rest AUC, and the macro AUC is undefined when no
    development class (one the model gives a score) has both - an unseen class's all-zero column would only
    give 0.5 by ties."""
    out: dict[str, str] = {}
    n = len(y)
    for j, c in enumerate(classes):
        pos = int((y == j).sum())
        if pos == 0:
            out[str(_plain(c))] = "no external patient has this class (no positives)"
        elif pos == n:
            out[str(_plain(c))] = "every external patient has this class (no negatives)"
    scored = [str(_plain(c)) for c in classes[:n_dev] if str(_plain(c)) not in out]
    if not scored:
        present = sorted({str(_plain(classes[j])) for j in np.unique(y)}) if n else []
        unseen = [c for c in present if c in {str(_plain(x)) for x in classes[n_dev:]}]
        out["macro"] = ("undefined: no class the development model scores has both positives and negatives among "
                        f"the {n} external patient(s) (classes present: {', '.join(present) or 'none'}"
                        + (f"; unseen in development, so without a score: {', '.join(unseen)}" if unseen else "")
                        + ")")
    return out


FAILED_MASK_SCORING = ("scored from the development training class prior (probability = each class's share of the "
                       "fitting patients, predicted class = the most frequent), counted among the evaluated patients")


def _prior(card: dict, classes: np.ndarray) -> np.ndarray:
    """The development fitting patients' class shares over ``classes`` (uniform over the development classes for a
    model card without ``training_class_counts``)."""
    counts = card.get("training_class_counts")
    if counts:
        v = np.array([float(counts.get(str(c), 0)) for c in classes])
    else:
        v = np.array([1.0 if c in set(card["class_codes"]) else 0.0 for c in classes])
    return v / v.sum()


def _plain(v):
    return v.item() if hasattr(v, "item") else v


# --------------------------------------------------------------------------- report
def report_stage(cfg: Config, inputs: Layout, st: StageContext, development: str) -> Path:
    """``external_report.html`` from the external run's artifacts (``inputs``) and the development run."""
    from .report import build_report

    return build_report(inputs, cfg.report.dca_category, out=st, external=development)
