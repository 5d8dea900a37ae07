"""A cohort's RTSTRUCT / DICOM-SEG masks turned into voxel masks once, in the run's cache.

Every stage reads masks as volumes; so when the cohort is loaded, each manifest mask that is a
contour file is rasterised (:func:`cervirad.dicom.contours.contour_mask`) onto its image series
and written to ``<run>/cache/dicom_masks/<id>.nii.gz``, and the patient's mask points there. The
file is rewritten only when the contour file, the series files or ``data.mask_roi`` change.
Problems of every patient are collected and raised together (one line each).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

from ..files import hash_obj, read_json
from ..errors import CohortValidationError, InputError
from ..files import atomic_path
from ..layout import case_file
from .contours import contour_kind, contour_mask
from .series import split_ref

log = logging.getLogger(__name__)
CODE_VERSION = 1  # bump when rasterisation changes


def _stat_key(path: Path) -> list:
    folder, uid = split_ref(path)
    files = sorted(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else [folder]
    return [uid] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]


def resolve_contour_masks(cohort, roi: Optional[str], cache_dir: Path):
    """The cohort with every RTSTRUCT/SEG mask replaced by its rasterised NIfTI in ``cache_dir``."""
    from ..io import write_image

    problems: list[str] = []
    patients = []
    for p in cohort.patients:
        try:
            kind = contour_kind(p.mask, p.id) if p.mask is not None else None
        except InputError as e:
            problems.append(str(e))
            kind = None
        if kind is None:
            patients.append(p)
            continue
        target = case_file(cache_dir, p.id, ".nii.gz")
        stamp = target.with_name(target.name[: -len(".nii.gz")] + ".key.json")
        key = hash_obj({"mask": _stat_key(Path(p.mask)), "roi": roi, "code": CODE_VERSION,
                        "images": {s: _stat_key(Path(f)) for s, f in sorted(p.images.items())}})
        if not (target.is_file() and stamp.is_file() and _read_key(stamp) == key):
            try:
                mask = contour_mask(p.mask, p.images, roi, p.id)
            except InputError as e:
                problems.append(str(e))
                patients.append(p)
                continue
            write_image(mask, target)
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps({"key": key}), encoding="utf-8")
        patients.append(dataclasses.replace(p, mask=target))
    if len(problems) > 1:  # the error line shows the first; every one on screen (capped) and in the error
        for line in problems[:20]:
            log.error("%s", line)
    if problems:
        raise CohortValidationError(problems)
    return dataclasses.replace(cohort, patients=patients)


def _read_key(path: Path) -> Optional[str]:
    try:
        return read_json(path).get("key")
    except (OSError, ValueError, AttributeError):
        return None
