"""Cohort validation and fingerprint (run at the start of every stage that reads images).

Every problem is one line naming the patient and the fix. The fingerprint records what the
data looks like: spacings, shapes, intensity percentiles, lesion volumes and class counts.
"""
from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .pathology import LABEL, pathologic_typing, pathology_problems
from .config.schema import ClinicalColumnsConfig, Config, DataConfig
from .errors import CohortValidationError, InputError
from .features.clinical import clinical_problems
from .io import (Cohort, Patient, check_volume_bytes, geometry_mismatch, geometry_mismatch_message, read_image,
                 to_array)
from .files import write_json
from .layout import Layout
from .rundir import StageContext

log = logging.getLogger(__name__)
SHOWN = 20  # problems printed before "... and N more"


def _check_patient(p: Patient, sequences: tuple[str, ...], tol: float,
                   label: int | None = None) -> tuple[list[str], list[str], dict]:
    """Problems, warnings and fingerprint facts of one patient."""
    problems: list[str] = []
    warnings: list[str] = []
    facts: dict[str, Any] = {"id": p.id}
    images = {}
    for seq in sequences:
        path = p.images.get(seq)
        if path is None:
            problems.append(f"Missing {seq} for case '{p.id}': the manifest cell is empty; add the file path.")
            continue
        try:
            img = read_image(path, p.id, seq)
            nonfinite = check_volume_bytes(path, p.id, seq)  # every byte read: truncation, gzip CRC, NaN/inf
        except InputError as e:
            problems.append(str(e))
            continue
        images[seq] = img
        arr = to_array(img)
        nonfinite += int(arr.size - np.count_nonzero(np.isfinite(arr)))
        facts[seq] = {"size": list(img.GetSize()), "spacing": [round(s, 4) for s in img.GetSpacing()],
                      "direction": [round(d, 4) for d in img.GetDirection()],
                      "p0_5": float(np.percentile(arr, 0.5)), "p50": float(np.percentile(arr, 50)),
                      "p99_5": float(np.percentile(arr, 99.5))}
        if nonfinite:
            problems.append(f"Non-finite voxels in {seq} of case '{p.id}': {nonfinite} NaN/inf values; fix or "
                            "re-export the volume.")
    ref_seq = next(iter(images), None)
    for seq, img in images.items():
        if seq != ref_seq and geometry_mismatch(images[ref_seq], img, tol):
            warnings.append(f"{seq} grid differs from {ref_seq}; preprocess resamples it onto {ref_seq}")
    if p.mask is not None:
        try:
            mask = read_image(p.mask, p.id, "mask")
            check_volume_bytes(p.mask, p.id, "mask")
        except InputError as e:
            problems.append(str(e))
            return problems, warnings, facts
        m = to_array(mask)
        values = np.unique(m)
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        if label is not None:
            m = (m == label).astype(np.uint8)
            if not m.any():
                problems.append(f"Mask of case '{p.id}' has no voxel with data.mask_label {label} (values {{{shown}}} "
                                "found); set data.mask_label to the lesion's label.")
        elif not set(values.tolist()) <= {0, 1}:
            problems.append(f"Non-binary mask for case '{p.id}': values {{{shown}}} found, expected 0/1; "
                            "binarise it (lesion = 1) or set data.mask_label to the lesion's label.")
        elif not values.max(initial=0):
            problems.append(f"Empty mask for case '{p.id}': no lesion voxel; draw the lesion or remove the mask "
                            "path from the manifest.")
        if ref_seq is not None and ref_seq == sequences[0]:  # an unreadable first sequence is reported already
            mis = geometry_mismatch(images[ref_seq], mask, tol)
            if mis:
                problems.append(geometry_mismatch_message(p.id, ref_seq, mis))
        voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
        n = int((m > 0).sum())
        facts["lesion_ml"] = round(n * voxel_ml, 4)
        facts["lesion_slices"] = int((m > 0).any(axis=(1, 2)).sum())
        if ref_seq is not None and n:
            arr = to_array(images[ref_seq])
            if arr.shape == m.shape:
                inside = arr[m > 0]
                facts["lesion_p50"] = float(np.median(inside))
    return problems, warnings, facts


def run_stage(cfg: Config, inputs: Layout, st: StageContext) -> dict:
    """The validate stage: check the cohort (``inputs.cohort``), write ``fingerprint.json``. A cohort without a
    clinical table is valid (segmentation needs none); the stages that need labels say so themselves."""
    cohort = inputs.cohort
    try:
        fp = validate_cohort(cohort, cfg.data, require_labels=False, n_threads=cfg.execution.workers,
                             clinical_columns=cfg.features.clinical_columns, cv_folds=cfg.classification.cv_folds)
    except CohortValidationError as e:  # every problem on screen (capped) and in run.json
        for line in e.problems[:SHOWN]:
            log.error("validate: %s", line)
        if len(e.problems) > SHOWN:
            log.error("validate: ... and %d more problem(s), all in run.json", len(e.problems) - SHOWN)
        raise
    write_json(st.fingerprint, fp)
    st.info["n_patients"] = fp["n_patients"]
    for w in fp["warnings"][:5]:
        log.info("validate: %s", w)
    return fp


def validate_cohort(cohort: Cohort, data: DataConfig, require_labels: bool = True,
                    n_threads: int = 2, clinical_columns: ClinicalColumnsConfig | None = None,
                    cv_folds: int | None = None) -> dict:
    """Check a cohort; raise :class:`CohortValidationError` listing every problem, else return the fingerprint.

    ``clinical_columns`` (``features.clinical_columns``): where the clinical variables are; every
    unreadable value in them is a problem (:func:`cervirad.features.clinical.clinical_problems`).
    """
    problems: list[str] = []
    warnings: list[str] = []
    if not cohort.patients:
        raise InputError(f"Manifest '{cohort.manifest_path}' lists no patients; add one row per patient.")
    counts = Counter(cohort.ids)
    for pid, n in sorted(counts.items()):
        if n > 1:
            problems.append(f"Duplicate patient id '{pid}' in manifest '{cohort.manifest_path}' ({n} rows); "
                            "keep one row per patient.")
    with ThreadPoolExecutor(max_workers=max(1, n_threads)) as pool:
        results = list(pool.map(lambda p: _check_patient(p, cohort.sequences, data.geometry_tolerance,
                                                         data.mask_label),
                                cohort.patients))
    per_patient = []
    for prob, warn, facts in results:
        problems += prob
        warnings += warn
        per_patient.append(facts)

    class_counts: dict[str, int] = {}
    class_notes: list[str] = []
    clinical = cohort.clinical
    if clinical is not None:
        known = set(clinical[data.id_column].astype(str))
        for pid in cohort.ids:
            if pid not in known:
                problems.append(f"Patient '{pid}' has no row in clinical table '{cohort.clinical_path}'; "
                                "add the row or remove the patient from the manifest.")
        dup = clinical[data.id_column][clinical[data.id_column].duplicated()].unique()
        for pid in dup:
            problems.append(f"Duplicate patient id '{pid}' in clinical table '{cohort.clinical_path}'; keep one row.")
        pprob = pathology_problems(clinical, data)
        problems += pprob
        problems += clinical_problems(clinical, clinical_columns or ClinicalColumnsConfig(), data.id_column)
        if not pprob:
            y = pathologic_typing(clinical.drop_duplicates(data.id_column), data)
            y = y[y.index.isin(cohort.ids)]
            class_counts = {str(k): int(v) for k, v in sorted(Counter(y.tolist()).items())}
            if len(class_counts) == 1:
                problems.append(f"Every patient has pathology category {next(iter(class_counts))}: a classifier needs "
                                "at least two categories; check the pathology columns or add patients.")
            small = [k for k, n in class_counts.items() if cv_folds and n < cv_folds]
            if small and len(class_counts) > 1:
                class_notes = [f"Category {k} has {class_counts[k]} patient(s), fewer than the {cv_folds} "
                               "cross-validation folds (classification.cv_folds)." for k in small]
    elif require_labels:
        problems.append("No clinical table given; pass --clinical FILE (or data.clinical) with the pathology columns.")
    batches, batch_notes = _batches(cohort, data, problems)
    if problems:
        raise CohortValidationError(problems)
    counted = Counter(warnings)
    notes = [f"{n} patient(s): {w}." for w, n in sorted(counted.items())] + class_notes + batch_notes
    fp = _fingerprint(cohort, per_patient, class_counts, notes)
    if batches is not None:  # only with data.batch_column (a cohort without one: the fingerprint is unchanged)
        fp["batch_column"], fp["batches"] = data.batch_column, batches
    return fp


def _batches(cohort: Cohort, data: DataConfig, problems: list[str]) -> tuple[dict | None, list[str]]:
    """``data.batch_column``: patients per batch (logged), and warnings for batches below the minimum."""
    from .batch import batch_summary, read_batches

    labels, prob, warn = read_batches(data, cohort)
    problems += prob
    if labels is None or prob:
        return None, warn
    sizes, small = batch_summary(labels, data.batch_min_patients)
    log.info("validate: %d batch(es) by data.batch_column '%s': %s", len(sizes), data.batch_column,
             ", ".join(f"{b} {n}" for b, n in sizes.items()))
    for w in warn + small:
        log.warning("validate: %s", w)
    return sizes, warn + small


def _summ(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {}
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def _fingerprint(cohort: Cohort, per_patient: list[dict], class_counts: dict, warnings: list[str]) -> dict:
    seqs = {}
    for seq in cohort.sequences:
        rows = [f[seq] for f in per_patient if seq in f]
        spacings = np.array([r["spacing"] for r in rows])
        sizes = np.array([r["size"] for r in rows])
        seqs[seq] = {
            "spacing_median": np.median(spacings, axis=0).round(4).tolist(),
            "spacing_min": spacings.min(axis=0).round(4).tolist(),
            "spacing_max": spacings.max(axis=0).round(4).tolist(),
            "size_median": np.median(sizes, axis=0).astype(int).tolist(),
            "size_min": sizes.min(axis=0).tolist(),
            "size_max": sizes.max(axis=0).tolist(),
            "intensity_p0_5_median": float(np.median([r["p0_5"] for r in rows])),
            "intensity_p50_median": float(np.median([r["p50"] for r in rows])),
            "intensity_p99_5_median": float(np.median([r["p99_5"] for r in rows])),
        }
    lesion = [f["lesion_ml"] for f in per_patient if "lesion_ml" in f]
    return {
        "n_patients": len(cohort.patients),
        "sequences": seqs,
        "lesion_volume_ml": _summ(lesion),
        "lesion_slices": _summ([f["lesion_slices"] for f in per_patient if "lesion_slices" in f]),
        "n_with_mask": len(lesion),
        "label": LABEL,
        "class_counts": class_counts,
        "warnings": warnings,
        "patients": per_patient,
    }
