"""Each patient's scanner (the ComBat batch): ``data.batch_column``.

* a column name: the value in the clinical table (by patient id), else in the manifest;
  an empty cell is a problem naming the patient;
* ``auto``: from the image headers, where they exist: DICOM Manufacturer (0008,0070) +
  ManufacturerModelName (0008,1090) + MagneticFieldStrength (0018,0087) of the patient's first
  sequence, e.g. ``SIEMENS Skyra 3T``. NIfTI, NRRD and MHA files carry no scanner: those
  patients form one batch :data:`NO_HEADER`, and one warning line says so and how to fix it.

``validate`` lists the batches with their sizes and warns below ``data.batch_min_patients``;
the feature stage writes the label into the feature table's ``batch`` column, so the batch
travels with the rows into classification (:mod:`cervirad.classification.harmonize`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .config.schema import DataConfig
from .errors import InputError
from .io import Cohort

log = logging.getLogger(__name__)

AUTO = "auto"
BATCH = "batch"  # the feature-table column holding it
NO_HEADER = "unknown (no DICOM header)"
DICOM_TAGS = (("0008|0070", "Manufacturer"), ("0008|1090", "ManufacturerModelName"),
              ("0018|0087", "MagneticFieldStrength"))


def batch_labels(data: DataConfig, cohort: Cohort) -> dict[str, str] | None:
    """Patient id -> batch label (None when ``data.batch_column`` is null); one-line errors."""
    labels, problems, _ = read_batches(data, cohort)
    if problems:
        raise InputError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return labels


def read_batches(data: DataConfig, cohort: Cohort) -> tuple[dict[str, str] | None, list[str], list[str]]:
    """(labels, problems, warnings) of ``data.batch_column`` for every patient of the manifest."""
    col = data.batch_column
    if col is None:
        return None, [], []
    if col == AUTO:
        return _from_headers(cohort)
    table, where = _table_with(col, data, cohort)
    if table is None:
        return None, [f"data.batch_column '{col}' is neither a column of the clinical table "
                      f"'{cohort.clinical_path}' nor of the manifest '{cohort.manifest_path}'; name the scanner/site "
                      "column, or use auto (DICOM headers)."], []
    values = dict(zip(table[data.id_column].astype(str).str.strip(), table[col]))
    labels, problems = {}, []
    for pid in cohort.ids:
        v = values.get(pid)
        text = "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).strip()
        if not text:
            problems.append(f"Patient '{pid}' has no batch: its '{col}' cell in {where} is empty; fill in the "
                            "scanner/site.")
        labels[pid] = text
    return labels, problems, []


def _table_with(col: str, data: DataConfig, cohort: Cohort) -> tuple[pd.DataFrame | None, str]:
    if cohort.clinical is not None and col in cohort.clinical.columns:
        return cohort.clinical, f"clinical table '{cohort.clinical_path}'"
    if cohort.manifest_path is not None and Path(cohort.manifest_path).is_file():
        from .io import read_table

        manifest = read_table(Path(cohort.manifest_path), "manifest", id_columns=(data.id_column,), all_text=True)
        if col in manifest.columns and data.id_column in manifest.columns:
            return manifest, f"manifest '{cohort.manifest_path}'"
    return None, ""


def _from_headers(cohort: Cohort) -> tuple[dict[str, str], list[str], list[str]]:
    labels, without = {}, []
    for p in cohort.patients:
        path = next((p.images[s] for s in cohort.sequences if p.images.get(s) is not None), None)
        label = dicom_scanner(Path(path)) if path is not None else None
        if label is None:
            without.append(p.id)
        labels[p.id] = label or NO_HEADER
    warnings = []
    if without:
        warnings.append(f"data.batch_column auto: {len(without)} of {len(labels)} patient(s) (e.g. '{without[0]}') "
                        "have no DICOM scanner header (NIfTI/NRRD/MHA store none); they form one batch "
                        f"'{NO_HEADER}' - name a clinical-table or manifest column with the scanner instead")
    return labels, [], warnings


def dicom_scanner(path: Path) -> str | None:
    """``Manufacturer ModelName <field>T`` from a DICOM file, a series folder or ``folder#UID`` (its first
    file), or None for a non-DICOM volume or a header without those tags."""
    import pydicom

    from .dicom.series import is_dicom, list_series, split_ref

    folder, uid = split_ref(path)
    if folder.is_dir():
        series = [s for s in list_series(folder) if uid is None or s.uid == uid]
        first = series[0].files[0] if series and series[0].files else None
    else:
        first = folder if folder.is_file() and is_dicom(folder) else None
    if first is None:
        return None
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=[name for _, name in DICOM_TAGS])
    except Exception:  # pydicom raises many types on damaged files
        return None
    parts = []
    for _, name in DICOM_TAGS:
        value = str(ds.get(name, "") or "").strip()
        if value and name == "MagneticFieldStrength":
            try:
                value = f"{float(value):g}T"
            except ValueError:
                pass
        if value:
            parts.append(value)
    return " ".join(parts) or None


def batch_summary(labels: dict[str, str], min_patients: int) -> tuple[dict[str, int], list[str]]:
    """Patients per batch (largest first) and a warning per batch below ``min_patients``."""
    counts = pd.Series(list(labels.values()), dtype=object).value_counts()
    sizes = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}
    warnings = [f"batch '{b}' has {n} patient(s), fewer than data.batch_min_patients ({min_patients}): its ComBat "
                "estimates will be noisy; pool it with a similar scanner or collect more patients"
                for b, n in sizes.items() if n < min_patients]
    if len(sizes) == 1:
        warnings.append(f"every patient is in one batch ('{next(iter(sizes))}'): there is no scanner effect to "
                        "harmonise within this cohort")
    return sizes, warnings
