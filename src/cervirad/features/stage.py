"""The extract-features stage: cohort + masks -> one feature row per patient in ``<run>/features/``.

Outputs (``features/`` for manual masks, ``features/predicted/`` for the segmentation's masks):

- ``features.parquet`` / ``features.csv``: ``patient_id``, ``split``, ``Pathologic_typing``, then
  the feature columns: radiomics (``original_glcm_Contrast``, ``wavelet-LLL_firstorder_Mean``, ...),
  histogram (``hist_median``, ...) and clinical (``clin_age``, ...). With several sequences the
  image features carry the sequence as prefix (``t2w_original_glcm_Contrast``, ``adc_hist_mean``).
- ``columns.json``: which feature columns are predictors and which are kept for the record only
  (treatment variables unless ``features.include_treatment``).
- ``column_counts.json``: feature columns per category (clinical, shape, firstorder, ... histogram).
- ``diagnostics.csv``: PyRadiomics' diagnostics per case (versions, settings, image/mask facts),
  seconds, lesion voxels and whether the case came from the cache.
- ``errors.csv``: one row per failed case or patient (patient_id, sequence, step, message).
- ``robustness.csv`` (manual masks, ``features.robustness.perturbations`` >= 2): every image feature's ICC
  across perturbed extractions of the training patients (:mod:`.perturbation`).
"""
from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..batch import BATCH, batch_labels
from ..pathology import LABEL, pathologic_typing
from ..splits import load_splits, split_of
from ..config.schema import Config
from ..errors import InputError
from ..io import Cohort, write_table
from ..files import write_json
from ..layout import (COLUMNS, COLUMN_COUNTS, DIAGNOSTICS, ERRORS, FEATURES_CSV, FEATURES_TABLE, RADIOMICS_PARAMS,
                      ROBUSTNESS, Layout, case_file)
from ..rundir import StageContext
from . import clinical as clin
from .cases import CaseCache, CaseJob, case_key, extract_jobs, label_voxels
from .families import family_of, family_settings, names as family_names
from .radiomics_ext import check_subbands, load_params, resolve_params_path

log = logging.getLogger(__name__)

RADIOMICS_CLASSES = ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
ERROR_COLUMNS = ["patient_id", "sequence", "step", "message"]


# --------------------------------------------------------------------------- jobs
def build_jobs(cfg: Config, cohort: Cohort, masks_dir: Path | None, masks: str, params: dict,
               subbands: tuple[str, ...] | None, n_jobs: int) -> tuple[list[CaseJob], list[dict]]:
    """One job per (patient, sequence) that has a mask, largest lesion first; plus error rows."""
    fc = cfg.features
    reference = cfg.data.sequences[0] if cfg.data.sequences else fc.sequences[0]
    if masks == "manual" and cfg.data.mask_label is not None:  # a multi-label mask: the lesion's label
        params = {**params, "setting": {**params.get("setting", {}), "label": cfg.data.mask_label}}
    label = int(params.get("setting", {}).get("label", 1))
    jobs, errors = [], []
    for p in cohort.patients:
        mask = p.mask if masks == "manual" else case_file(masks_dir, p.id, ".nii.gz")
        if masks == "predicted" and not mask.is_file():
            continue  # the segmentation stage writes masks for some patients only (usually the test split)
        if mask is None or not Path(mask).exists():
            errors.append(_err(p.id, "", "mask", f"No manual mask for case '{p.id}': the manifest's mask cell is "
                               "empty or the file is missing; add it or extract with --masks predicted."))
            continue
        voxels = label_voxels(mask, label)
        for seq in fc.sequences:
            image = p.images.get(seq)
            if image is None:
                errors.append(_err(p.id, seq, "image", f"Missing {seq} for case '{p.id}': the manifest cell is "
                                   "empty; add the file or remove the sequence from features.sequences."))
                continue
            jobs.append(CaseJob(p.id, seq, str(image), str(mask), params, subbands, family_settings(fc),
                                cfg.data.geometry_tolerance, same_grid_required=(seq == reference),
                                threads=1 if n_jobs > 1 else 0, voxels=voxels))
    jobs.sort(key=lambda j: (-j.voxels, j.patient_id, j.sequence))
    return jobs, errors


def _err(pid: str, seq: str, step: str, message: str) -> dict:
    return {"patient_id": pid, "sequence": seq, "step": step, "message": message}


# --------------------------------------------------------------------------- execution
def extract_all(jobs: list[CaseJob], cache: CaseCache, n_jobs: int, backend: str,
                scheduler_address: str | None) -> tuple[list[dict], int]:
    """Results for every job (cache first, the rest in parallel); also the number of cache hits."""
    results, todo = [], []
    for job in jobs:
        key = case_key(job)
        job = replace(job, key=key)
        hit = cache.get(key)
        if hit is not None:
            results.append({**hit, "cached": True})
        else:
            todo.append(job)
    n_hits = len(results)
    if todo:
        log.info("extract-features: %d case(s) to extract (%d cached) on %d worker(s), backend %s",
                 len(todo), n_hits, min(n_jobs, len(todo)), backend)
    from ..progress import progress  # a bar on a terminal, else one log line per 10 % of the cases

    for res in progress(extract_jobs(todo, n_jobs, backend, scheduler_address), len(todo), "extract-features",
                        "case", log):
        cache.put(res["key"], res)
        results.append({**res, "cached": False})
        if "error" in res:
            log.warning("extract-features: %s", res["error"])
    return results, n_hits


# --------------------------------------------------------------------------- the table
def category(column: str, sequences: tuple[str, ...] = ()) -> str:
    """Category of a feature column: clinical, a feature family (:mod:`.families`), or the radiomics class.

    ``sequences``: the sequence prefixes in use (several sequences), stripped first.
    """
    if column.startswith("clin_"):
        return "clinical"
    head, _, rest = column.partition("_")
    name = rest if head in sequences else column
    family = family_of(name)
    if family is not None:
        return family.name
    parts = name.split("_")
    return parts[1] if len(parts) >= 3 else "other"


def assemble(results: list[dict], sequences: tuple[str, ...]) -> tuple[pd.DataFrame, list[dict]]:
    """Image-feature rows per patient (index: patient id); patients with any failed sequence are error rows."""
    by_patient: dict[str, dict[str, dict]] = defaultdict(dict)
    failed: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if "error" in r:
            failed[r["patient_id"]].append(_err(r["patient_id"], r["sequence"], "extraction", r["error"]))
        else:
            by_patient[r["patient_id"]][r["sequence"]] = r["features"]
    prefix = len(sequences) > 1
    rows, errors = {}, [e for v in failed.values() for e in v]
    for pid in sorted(by_patient):
        if pid in failed:
            continue
        row = {}
        for seq in sequences:
            row.update({(f"{seq}_{k}" if prefix else k): v for k, v in by_patient[pid][seq].items()})
        rows[pid] = row
    order = _column_order(results, sequences, prefix)
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=order), errors


def _column_order(results: list[dict], sequences: tuple[str, ...], prefix: bool) -> list[str]:
    """Extraction order of the first successful case per sequence (radiomics, then histogram)."""
    order = []
    for seq in sequences:
        first = next((r for r in results if "error" not in r and r["sequence"] == seq), None)
        if first is not None:
            order += [(f"{seq}_{k}" if prefix else k) for k in first["features"]]
    return order


def column_counts(columns: list[str], sequences: tuple[str, ...] = ()) -> dict[str, int]:
    """Feature columns per category (clinical, each radiomics class, each feature family), plus ``total``."""
    counts = {c: 0 for c in ("clinical", *RADIOMICS_CLASSES, *family_names())}
    for col in columns:
        cat = category(col, sequences)
        counts[cat] = counts.get(cat, 0) + 1
    counts["total"] = len(columns)
    return counts


def diagnostics_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        if "error" in r:
            continue
        rows.append({"patient_id": r["patient_id"], "sequence": r["sequence"], "cached": r.get("cached", False),
                     "seconds": r.get("seconds"), "mask_voxels": r.get("mask_voxels"), "cache_key": r.get("key"),
                     **r.get("diagnostics", {})})
    return pd.DataFrame(rows).sort_values(["patient_id", "sequence"]) if rows else pd.DataFrame(
        columns=["patient_id", "sequence"])


# --------------------------------------------------------------------------- the stage
def run_manual(cfg: Config, inputs: Layout, st: StageContext) -> Path:
    """Stage ``features``: every patient of ``inputs.cohort`` with a manual mask -> ``features/``."""
    return run_stage(cfg, inputs, inputs.cohort, st, "manual")


def run_predicted(cfg: Config, inputs: Layout, st: StageContext) -> Path:
    """Stage ``features-predicted``: the patients the segmentation predicted (``inputs``' masks/) ->
    ``features/predicted/``."""
    return run_stage(cfg, inputs, inputs.cohort, st, "predicted")


def check_settings(cfg: Config) -> tuple[dict, tuple[str, ...] | None]:
    """The radiomics parameters (validated by PyRadiomics' schema) and the wavelet sub-bands kept."""
    params = load_params(cfg.features.radiomics_params)
    wavelet = "Wavelet" in (params.get("imageType") or {})
    return params, check_subbands(cfg.features.wavelet_subbands) if wavelet else None


def run_stage(cfg: Config, run: Layout, cohort: Cohort, st: StageContext, masks: str) -> Path:
    """Extract features for every patient with a mask into ``st``; returns the staged output folder. ``run``:
    the run's artifacts (splits.json, masks/) as the stage's declared inputs."""
    fc = cfg.features
    params, subbands = check_settings(cfg)
    # an external cohort has no split: its rows are "external"
    splits = split_of(load_splits(run.path)) if run.splits.is_file() else {}
    no_split = "none" if run.splits.is_file() else "external"
    labelled = cohort.clinical is not None  # a segmentation-only cohort: image features, no label
    clinical = clin.encode_clinical(cohort.clinical, fc.clinical_columns, cfg.data.id_column,
                                    fc.clinical_missing_indicators) if labelled else None
    labels = pathologic_typing(cohort.clinical, cfg.data) if labelled else None
    n_jobs = cfg.execution.workers
    jobs, errors = build_jobs(cfg, cohort, run.masks_dir() if masks == "predicted" else None, masks, params, subbands,
                              n_jobs)
    if not jobs:
        hint = ("run `cervirad train-seg` first" if masks == "predicted" else "add mask paths to the manifest")
        raise InputError(f"No (image, mask) pair to extract features from in '{run.path}' ({masks} masks); {hint}.")
    cache = CaseCache(run.cache_dir("features") if fc.cache else None)
    t0 = time.perf_counter()
    results, n_hits = extract_all(jobs, cache, n_jobs, cfg.execution.backend, cfg.execution.scheduler_address)
    seconds = time.perf_counter() - t0

    image_feats, ext_errors = assemble(results, fc.sequences)
    errors += ext_errors
    missing = [pid for pid in image_feats.index if labelled and pid not in clinical.index]
    errors += [_err(pid, "", "clinical", f"Patient '{pid}' has no row in the clinical table; add it to get a "
                    "label and clinical features.") for pid in missing]
    ids = [pid for pid in image_feats.index if pid not in missing]
    if not ids:
        first = errors[0]["message"] if errors else "no case succeeded"
        raise InputError(f"Feature extraction produced no row ({len(errors)} error(s)); first: {first}")
    head = {"patient_id": ids, "split": [splits.get(pid, no_split) for pid in ids]}
    batches = batch_labels(cfg.data, cohort)  # data.batch_column: the scanner travels with the rows
    if batches is not None:
        head[BATCH] = [batches[pid] for pid in ids]
    if labelled:
        head[LABEL] = [int(labels[pid]) for pid in ids]
    table = pd.concat([pd.DataFrame(head), image_feats.loc[ids].reset_index(drop=True)]
                      + ([clinical.loc[ids].reset_index(drop=True)] if labelled else []), axis=1)
    feature_cols = [c for c in table.columns if c not in ("patient_id", "split", BATCH, LABEL)]
    excluded = clin.excluded_columns(fc.include_treatment, fc.clinical_missing_indicators)
    counts = column_counts(feature_cols, fc.sequences if len(fc.sequences) > 1 else ())
    out = st.features_dir(masks)
    write_table(table, out / FEATURES_TABLE)
    write_table(table, out / FEATURES_CSV)
    write_table(diagnostics_table(results), out / DIAGNOSTICS)
    write_table(pd.DataFrame(errors, columns=ERROR_COLUMNS), out / ERRORS)
    write_json(out / COLUMN_COUNTS, counts)
    # the radiomics parameters as used, frozen in the run: `cervirad evaluate` reads this copy, not the path
    shutil.copyfile(resolve_params_path(fc.radiomics_params), out / RADIOMICS_PARAMS)
    write_json(out / COLUMNS, {
        "id_columns": ["patient_id", "split", *([BATCH] if batches is not None else [])],
        "label": LABEL if labelled else None,
        "predictors": [c for c in feature_cols if c not in excluded],
        "excluded_from_predictors": excluded,
        "masks": masks, "radiomics_params": str(fc.radiomics_params), "radiomics_params_copy": RADIOMICS_PARAMS})
    st.info.update(n_patients=len(ids), n_feature_columns=len(feature_cols), n_errors=len(errors),
                   n_cached=n_hits, extract_seconds=round(seconds, 2), masks=masks)
    if masks == "manual" and fc.robustness.perturbations and splits:  # perturbation ICC, training patients only
        from . import perturbation

        seqs = fc.sequences if len(fc.sequences) > 1 else ()
        st.info.update(perturbation.run(cfg, jobs, cache, {p for p, part in splits.items() if part != "test"},
                                      list(image_feats.columns), lambda c: category(c, seqs), out / ROBUSTNESS))
    log.info("extract-features: %d patients x %d feature columns, %d error(s), %d cached -> %s",
             len(ids), len(feature_cols), len(errors), n_hits, run.features_dir(masks))
    return out
