"""DICOM series in a folder: list them, pick one, read it as a SimpleITK volume.

A manifest cell may name a series inside a folder as ``folder#SeriesInstanceUID``. A folder
holding several image series is refused (one line listing each series' UID, description and
number of files) unless the cell names one. RTSTRUCT, SEG and other non-image objects in the
folder are not image series and are ignored here.
"""
from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError

# modalities of DICOM objects that are not image series
NON_IMAGE = frozenset({"RTSTRUCT", "SEG", "SR", "PR", "KO", "REG", "RTPLAN", "RTRECORD", "RTDOSE", "DOC",
                       "FID", "PLAN", "AU", "ECG"})
_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "SeriesDescription",
                "SeriesNumber", "FrameOfReferenceUID", "StudyInstanceUID", "ImagePositionPatient"]


def quiet(func):
    """Run ``func`` without pydicom's / highdicom's warnings and log lines: they quote attribute
    values (a patient's name among them) and must not reach the console or the logs."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        loggers = [logging.getLogger(n) for n in ("pydicom", "highdicom")]
        levels = [lg.level for lg in loggers]
        try:
            for lg in loggers:
                lg.setLevel(logging.CRITICAL + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return func(*args, **kwargs)
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
    return wrapper


@dataclass
class SeriesInfo:
    uid: str
    modality: str
    description: str
    frame_of_reference: str
    study: str
    number: Optional[int] = None
    files: list[Path] = field(default_factory=list)

    def label(self) -> str:
        """``UID 'description' (N files)``: what a message shows (no patient attribute)."""
        return f"{self.uid} '{self.description}' ({len(self.files)} file(s))"


def split_ref(path: str | Path) -> tuple[Path, Optional[str]]:
    """``folder#UID`` -> (folder, UID); any other path -> (path, None). A real file or folder whose
    name contains ``#`` is taken as it is."""
    p = Path(path)
    if p.exists() or "#" not in p.name:
        return p, None
    head, _, uid = str(p).rpartition("#")
    return Path(head), uid.strip() or None


def is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@quiet
def read_header(path: Path):
    """The header tags cervirad needs (no pixel data), or None when the file is not readable DICOM."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception:  # pydicom raises many types on damaged files
        return None


@quiet
def list_series(folder: Path, images_only: bool = True) -> list[SeriesInfo]:
    """The DICOM series directly inside ``folder`` (not below), by SeriesInstanceUID, in the order
    of their series number then UID."""
    found: dict[str, SeriesInfo] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not is_dicom(f):
            continue
        ds = read_header(f)
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        modality = str(ds.get("Modality", "") or "")
        if images_only and modality.upper() in NON_IMAGE:
            continue
        uid = str(ds.SeriesInstanceUID)
        info = found.get(uid)
        if info is None:
            number = ds.get("SeriesNumber")
            info = found[uid] = SeriesInfo(uid, modality, str(ds.get("SeriesDescription", "") or ""),
                                           str(ds.get("FrameOfReferenceUID", "") or ""),
                                           str(ds.get("StudyInstanceUID", "") or ""),
                                           int(number) if number not in (None, "") else None)
        info.files.append(f)
    return sorted(found.values(), key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))


def describe(series: list[SeriesInfo]) -> str:
    return "; ".join(s.label() for s in series)


def choose_series(folder: Path, uid: Optional[str], case: str, role: str) -> SeriesInfo:
    """The image series of ``folder`` to read: the one named by ``uid``, else the only one."""
    series = list_series(folder)
    if not series:
        raise InputError(f"Unreadable {role} for case '{case}': folder '{folder}' holds no DICOM series; "
                         "point the manifest at a volume file or a DICOM series folder.")
    if uid is not None:
        hit = [s for s in series if s.uid == uid]
        if not hit:
            raise InputError(f"Unknown DICOM series for {role} of case '{case}': folder '{folder}' holds no series "
                             f"{uid} (found: {describe(series)}); correct the UID after '#' in the manifest.")
        return hit[0]
    if len(series) > 1:
        raise InputError(f"Several DICOM series in folder '{folder}' for {role} of case '{case}': "
                         f"{describe(series)}; name one in the manifest as 'folder#SeriesInstanceUID' (or a "
                         "'series' column), or build the manifest with `cervirad index-dicom`.")
    return series[0]


def read_series(path: str | Path, case: str = "?", role: str = "image"):
    """(SimpleITK volume, the series, its files in slice order) for a folder or ``folder#UID``."""
    import SimpleITK as sitk

    folder, uid = split_ref(path)
    if not folder.is_dir():
        raise InputError(f"Missing {role} file for case '{case}': '{folder}' does not exist; fix the path in the "
                         "manifest.")
    info = choose_series(folder, uid, case, role)
    reader = sitk.ImageSeriesReader()
    files = list(reader.GetGDCMSeriesFileNames(str(folder), info.uid))
    if not files:  # GDCM could not sort them: keep the header order
        files = [str(f) for f in info.files]
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1][:160] if str(e).strip() else "unknown reader error"
        raise InputError(f"Unreadable {role} for case '{case}': DICOM series {info.uid} in '{folder}' could not be "
                         f"read ({first}); re-export the series.") from None
    return img, info, [Path(f) for f in files]


def series_ids_in(folder: Path) -> list[str]:
    return [s.uid for s in list_series(folder)]


def apply_series_column(path: Path, uids: list[str]) -> Path:
    """A manifest's ``series`` column: for a folder of several image series, ``folder#UID`` of the
    one series named in ``uids``; the path unchanged otherwise (one series, a file, or no match)."""
    if not uids or not path.is_dir():
        return path
    series = list_series(path)
    if len(series) < 2:
        return path
    hit = [s.uid for s in series if s.uid in uids]
    return Path(f"{path}#{hit[0]}") if len(hit) == 1 else path
