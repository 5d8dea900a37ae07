"""``cervirad index-dicom``: a tree of patient folders of DICOM files -> a cohort manifest.

Each sub-folder of the root is one patient (its whole sub-tree is read; symlinks are not
followed). Files are grouped by SeriesInstanceUID. For each sequence a rule (a regular
expression, case-insensitive, searched in SeriesDescription) picks exactly one image series of
the allowed modality (localisers are never picked); the mask is the one RTSTRUCT / DICOM-SEG that
references a chosen series (and, with ``roi``, holds an ROI/segment it selects). A patient with no
or several candidates for anything gets one line naming what was found; the manifest is written
only when every patient is complete, or, with ``skip_incomplete``, without those patients.

Patient ids are the folder names (or, when asked, PatientID); no other patient attribute is read
into the manifest or the messages.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError
from .series import NON_IMAGE, is_dicom, quiet

# the cervical MRI protocol: T2-weighted turbo/fast spin echo, diffusion, ADC map
DEFAULT_RULES = {"t2w": r"T2.*(TSE|FSE)|T2W", "dwi": r"DWI|diffusion", "adc": r"ADC|Apparent"}
_TAGS = ["Modality", "SeriesInstanceUID", "SeriesDescription", "ImageType", "PatientID", "FrameOfReferenceUID"]


@dataclass
class Series:
    uid: str
    modality: str
    description: str
    localizer: bool
    folders: set[Path] = field(default_factory=set)
    files: int = 0
    patient_ids: set[str] = field(default_factory=set)
    # RTSTRUCT / SEG: the series it references and its ROI / segment names
    references: Optional[str] = None
    names: list[str] = field(default_factory=list)
    path: Optional[Path] = None

    def label(self) -> str:
        return f"{self.uid} '{self.description}' ({self.files} file(s))"


@quiet
def scan_patient(folder: Path) -> dict[str, Series]:
    """Every DICOM series below ``folder``, by SeriesInstanceUID."""
    import pydicom

    found: dict[str, Series] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if f.is_symlink() or not is_dicom(f):
                continue
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_TAGS)
            except Exception:  # damaged file: not a candidate
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            if not uid:
                continue
            modality = str(ds.get("Modality", "") or "").upper()
            image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
            s = found.setdefault(uid, Series(uid, modality, str(ds.get("SeriesDescription", "") or ""),
                                             "LOCALIZER" in image_type))
            s.folders.add(Path(dirpath))
            s.files += 1
            s.patient_ids.add(str(ds.get("PatientID", "") or ""))
            if modality in ("RTSTRUCT", "SEG") and s.path is None:
                s.path = f
                s.references, s.names = _contour_facts(f, modality)
    return found


def _contour_facts(path: Path, modality: str) -> tuple[Optional[str], list[str]]:
    import pydicom

    from .contours import _referenced_series

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None, []
    if modality == "SEG":
        names = [str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])]
    else:
        names = [str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])]
    return _referenced_series(ds, modality), names


def _matches(names: list[str], roi: str) -> bool:
    rx = re.compile(roi, re.IGNORECASE)
    return any(n.casefold() == roi.casefold() or rx.fullmatch(n) for n in names)


def index_patient(folder: Path, rules: dict[str, str], modality: Optional[str], roi: Optional[str],
                  masks: bool, use_patient_id: bool) -> tuple[Optional[dict], list[str]]:
    """(manifest row, problems) of one patient folder."""
    series = scan_patient(folder)
    pid = folder.name
    problems: list[str] = []
    images = [s for s in series.values() if s.modality not in NON_IMAGE]
    if not series:
        return None, [f"Patient folder '{folder}': no DICOM file found; remove the folder or add its series."]
    if use_patient_id:
        ids = {i for s in images for i in s.patient_ids}
        if len(ids) != 1:
            return None, [f"Patient folder '{folder}': {len(ids)} different PatientID values in its image series; "
                          "keep one patient per folder or use the folder names as ids (--ids folder)."]
        pid = ids.pop()
    from ..io import check_id

    if not check_id(pid):
        return None, [f"Patient folder '{folder}': id {pid!r} is not a plain name (letters, digits, '_', '-', '.'); "
                      "rename the folder."]
    row: dict = {"patient_id": pid}
    chosen: dict[str, Series] = {}
    for seq, pattern in rules.items():
        rx = re.compile(pattern, re.IGNORECASE)
        hits = [s for s in images if rx.search(s.description) and not s.localizer
                and (modality is None or s.modality == modality.upper())]
        if len(hits) != 1:
            what = "no series" if not hits else f"{len(hits)} series"
            shown = "; ".join(s.label() for s in (hits or images)) or "none"
            problems.append(f"{what} for {seq} (rule '{pattern}'"
                            f"{', modality ' + modality if modality else ''}); "
                            f"{'candidates' if hits else 'image series found'}: {shown}; "
                            f"adjust --series {seq}=REGEX or remove the extra series.")
            continue
        s = hits[0]
        if len(s.folders) != 1:
            problems.append(f"{seq} series {s.label()} is split over {len(s.folders)} "
                            "folders; gather its files in one folder.")
            continue
        chosen[seq] = s
        only = sum(1 for o in images if folder_of(s) in o.folders) == 1
        row[seq] = str(folder_of(s)) if only else f"{folder_of(s)}#{s.uid}"
    if masks and chosen:
        uids = {s.uid for s in chosen.values()}
        contours = [s for s in series.values() if s.modality in ("RTSTRUCT", "SEG") and s.references in uids]
        picked = [c for c in contours if roi is None or _matches(c.names, roi)]
        if len(picked) != 1:
            what = "no RTSTRUCT/SEG" if not picked else f"{len(picked)} RTSTRUCT/SEG files"
            shown = "; ".join(f"{c.modality} '{c.path}' (ROIs: {', '.join(c.names) or 'none'})" for c in contours)
            problems.append(f"{what} referencing the chosen series"
                            f"{' with an ROI matching ' + repr(roi) if roi else ''} (found: {shown or 'none'}); "
                            "name the ROI with --roi, or pass --no-masks.")
        else:
            row["mask"] = str(picked[0].path)
    if problems:
        return None, [f"Patient '{pid}' ({folder}): " + " | ".join(problems)]
    return row, []


def folder_of(s: Series) -> Path:
    return next(iter(s.folders))


def index_tree(root: Path, rules: dict[str, str], modality: Optional[str] = "MR", roi: Optional[str] = None,
               masks: bool = True, use_patient_id: bool = False) -> tuple[list[dict], list[str]]:
    """(rows of complete patients, one problem line per incomplete patient) for a DICOM tree."""
    if not root.is_dir():
        raise InputError(f"DICOM root '{root}' is not a folder; pass the folder holding one sub-folder per patient.")
    for seq, pattern in rules.items():
        try:
            re.compile(pattern)
        except re.error as e:
            raise InputError(f"Invalid series rule {seq}={pattern!r}: not a regular expression ({e}); fix --series.") \
                from None
    if roi is not None:
        try:
            re.compile(roi)
        except re.error as e:
            raise InputError(f"Invalid --roi {roi!r}: not a regular expression ({e}); write a name or a valid "
                             "regular expression.") from None
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"DICOM root '{root}' has no patient sub-folders; put each patient's files in its own folder.")
    rows, problems = [], []
    for folder in folders:
        row, probs = index_patient(folder, rules, modality, roi, masks, use_patient_id)
        problems += probs
        if row is not None:
            rows.append(row)
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["patient_id"]] = seen.get(r["patient_id"], 0) + 1
    dup = sorted(k for k, n in seen.items() if n > 1)
    if dup:
        raise InputError(f"DICOM root '{root}': patient id(s) {', '.join(dup)} found in several folders; merge the "
                         "folders or use the folder names as ids (--ids folder).")
    return rows, problems


def parse_rules(items: list[str]) -> dict[str, str]:
    """``--series seq=REGEX`` items -> {seq: regex}; the defaults when none is given."""
    if not items:
        return dict(DEFAULT_RULES)
    rules: dict[str, str] = {}
    for item in items:
        seq, sep, pattern = item.partition("=")
        if not sep or not seq.strip() or not pattern.strip():
            raise InputError(f"Invalid --series {item!r}: expected SEQUENCE=REGEX, e.g. t2w='T2.*(TSE|FSE)'.")
        rules[seq.strip()] = pattern.strip()
    return rules
