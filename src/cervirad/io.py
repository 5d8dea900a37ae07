"""The one module that knows file formats: volumes, manifests, clinical tables.

Volumes: NIfTI (``.nii``, ``.nii.gz``), NRRD, MHA/MHD, and DICOM series folders, all read
with SimpleITK. A cohort is a manifest CSV (an id column, one column per sequence such as
``t2w``/``dwi``/``adc``, optional ``mask``) plus a clinical CSV keyed by the same id.
Relative paths in the manifest are relative to the manifest's folder.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .errors import InputError, shorten
from .files import atomic_path
from .layout import SAFE_ID

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
# optional manifest column: the SeriesInstanceUID(s) to read from DICOM folders holding several series
SERIES_COLUMN = "series"


# --------------------------------------------------------------------------- volumes
def read_image(path: str | Path, case: str = "?", role: str = "image") -> sitk.Image:
    """Read a 3D volume (NIfTI, NRRD, MHA, or a DICOM series: a folder holding one image series, or
    ``folder#SeriesInstanceUID``; see :mod:`cervirad.dicom.series`)."""
    from .dicom.series import split_ref

    p = Path(path)
    folder, uid = split_ref(p)
    if not folder.exists():
        raise InputError(f"Missing {role} file for case '{case}': '{p}' does not exist; fix the path in the manifest.")
    try:
        if folder.is_dir():
            from .dicom.series import read_series

            img = read_series(p, case, role)[0]
        else:
            _refuse_contour_file(p, case, role)
            img = sitk.ReadImage(str(p))
    except InputError:
        raise
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1][:160] if str(e).strip() else "unknown reader error"
        raise InputError(
            f"Unreadable {role} for case '{case}': '{p}' could not be read ({first}); "
            "re-export it as NIfTI/NRRD/MHA or a DICOM series.") from None
    if img.GetDimension() != 3:
        raise InputError(
            f"Wrong dimension for {role} of case '{case}': '{p}' is {img.GetDimension()}D, a 3D volume is expected; "
            "export the full volume, not a single slice.")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"Multi-component {role} for case '{case}': '{p}' has {img.GetNumberOfComponentsPerPixel()} components "
            "per voxel; save each sequence as its own scalar volume.")
    return img


def _refuse_contour_file(p: Path, case: str, role: str) -> None:
    """An RTSTRUCT/SEG read as a volume: it is a mask of the cohort (rasterised when the cohort is
    loaded, :func:`cervirad.dicom.masks.resolve_contour_masks`), never an image."""
    if any(p.name.lower().endswith(s) for s in VOLUME_SUFFIXES):
        return
    from .dicom.contours import contour_kind

    kind = contour_kind(p, case)
    if kind:
        raise InputError(f"Wrong file for {role} of case '{case}': '{p}' is a DICOM {kind} (contours), not an image "
                         "volume; put it in the manifest's mask column and its image series in the image column.")


_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
                 1280: "u8"}


def check_volume_bytes(path: str | Path, case: str = "?", role: str = "image") -> int:
    """Read every byte of a NIfTI file (``.nii``, ``.nii.gz``) and return its number of NaN/inf
    voxels; a one-line InputError when it is truncated or its gzip stream is corrupt.

    SimpleITK reads a truncated file as zeros and turns stored NaN/inf into 0, so this check
    reads the raw voxels itself. Other formats return 0 (their readers fail on short files)."""
    import gzip
    import zlib

    p = Path(path)
    name = p.name.lower()
    if p.is_dir() or not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return 0
    try:
        with (gzip.open(p, "rb") if name.endswith(".gz") else open(p, "rb")) as fh:
            data = fh.read()
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(f"Corrupt {role} file for case '{case}': '{p}' is a damaged or truncated gzip stream "
                         f"({type(e).__name__}: {str(e)[:80]}); copy or re-export the file.") from None
    info = _nifti_layout(data)
    if info is None:
        return 0  # not a header we know: SimpleITK's reader decides
    offset, count, dtype = info
    need = offset + count * np.dtype(dtype).itemsize
    if len(data) < need:
        raise InputError(f"Truncated {role} file for case '{case}': '{p}' holds {max(0, len(data) - offset)} of "
                         f"{need - offset} bytes of voxel data; copy or re-export the file.")
    if np.dtype(dtype).kind != "f":
        return 0
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return int(count - np.count_nonzero(np.isfinite(arr)))


def _nifti_layout(data: bytes) -> tuple[int, int, str] | None:
    """(voxel data offset, voxel count, numpy dtype) from a NIfTI-1 or NIfTI-2 header."""
    import struct

    for end in ("<", ">"):
        if len(data) >= 4 and struct.unpack(end + "i", data[:4])[0] == 348 and len(data) >= 348:
            dim = struct.unpack(end + "8h", data[40:56])
            code = struct.unpack(end + "h", data[70:72])[0]
            offset = int(struct.unpack(end + "f", data[108:112])[0]) or 352
        elif len(data) >= 4 and struct.unpack(end + "i", data[:4])[0] == 540 and len(data) >= 540:
            code = struct.unpack(end + "h", data[12:14])[0]
            dim = struct.unpack(end + "8q", data[16:80])
            offset = struct.unpack(end + "q", data[168:176])[0]
        else:
            continue
        if code not in _NIFTI_DTYPES or not 1 <= dim[0] <= 7:
            return None
        return offset, int(np.prod([max(1, d) for d in dim[1:dim[0] + 1]])), end + _NIFTI_DTYPES[code]
    return None


def write_image(img: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write a volume atomically (format from the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress)
    return path


def to_array(img: sitk.Image, dtype=np.float32) -> np.ndarray:
    """Voxel array in (z, y, x) order."""
    return sitk.GetArrayFromImage(img).astype(dtype, copy=False)


def read_mask(path: str | Path, case: str, label: int | None = None) -> sitk.Image:
    """A lesion mask as a binary uint8 image: voxels equal to ``label`` (a multi-label mask), else
    every non-zero voxel (validate has checked the mask is 0/1)."""
    m = read_image(path, case, "mask")
    return sitk.Cast(m == label if label is not None else m > 0, sitk.sitkUInt8)


def geometry_mismatch(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> Optional[str]:
    """Describe how two grids differ beyond ``tol`` (relative), or None when they match."""
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if np.any(np.abs(sa - sb) > tol * np.maximum(np.abs(sa), 1.0)):
        return f"spacing {_plain(sa, 4)} vs {_plain(sb, 4)}"
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if np.any(np.abs(oa - ob) > tol * np.maximum(sa, 1.0) * 10):
        return f"origin {_plain(oa, 3)} vs {_plain(ob, 3)}"
    if np.any(np.abs(np.array(a.GetDirection()) - np.array(b.GetDirection())) > tol):
        return "direction cosines differ"
    return None


def _plain(v: np.ndarray, digits: int) -> tuple[float, ...]:
    """Rounded plain floats: shown as (0.7, 0.7, 4.0), never (np.float64(0.7), ...)."""
    return tuple(round(float(x), digits) for x in v)


def geometry_mismatch_message(case: str, sequence: str, mismatch: str) -> str:
    """The one-line error for an image/mask pair on different grids (validate, extract-features)."""
    return (f"Image/mask geometry mismatch for case '{case}': {sequence} vs mask {mismatch}; "
            "resample the mask onto the image grid or raise data.geometry_tolerance.")


# --------------------------------------------------------------------------- tables
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_DECIMAL_COMMA = r"[+-]?\d*,\d+"


def read_table(path: str | Path, what: str = "table", id_columns: tuple[str, ...] = (),
               all_text: bool = False) -> pd.DataFrame:
    """Read a CSV (optionally gzip) or Parquet table.

    CSV: UTF-8 (a byte-order mark is dropped; anything else is refused naming the line), the
    delimiter detected from the header (comma, semicolon, tab or pipe; with semicolons, decimal
    commas such as ``1,5`` are read as numbers), and rows with no value at all skipped with a
    warning. ``id_columns`` (and every column with ``all_text``) are read as text exactly as written
    (``007`` stays ``007``, ``NA`` is an id), with surrounding spaces removed. Column names are
    stripped. ``df.attrs["lines"]`` holds each row's line number in the file (header = line 1).
    """
    p = Path(path)
    if not p.is_file():
        kind = "is a folder" if p.is_dir() else "does not exist"
        raise InputError(f"Missing {what}: '{p}' {kind}; pass the path of a CSV or Parquet file.")
    if p.suffix == ".parquet":
        try:
            df = pd.read_parquet(p)
        except Exception as e:  # pyarrow raises many types
            raise InputError(f"Unreadable {what} '{p}': {type(e).__name__}: {_first_line(e)}; "
                             "save it as a UTF-8 CSV or Parquet file.") from None
        df.columns = [str(c).strip() for c in df.columns]
        for c in (df.columns if all_text else [c for c in id_columns if c in df.columns]):  # as the CSV path
            df[c] = df[c].map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())
        df.attrs["lines"] = list(range(2, len(df) + 2))
        return df
    text = _decode(p, what)
    all_lines = text.splitlines()
    lead = next((i for i, ln in enumerate(all_lines) if ln.strip()), 0)  # blank lines above the header
    text = "\n".join(all_lines[lead:])
    first = all_lines[lead] if all_lines else ""
    delim = _delimiter(first)
    header = next(csv.reader([first], delimiter=delim), [])
    raw = {c.strip(): c for c in header}
    strict = {raw[c] for c in id_columns if c in raw}  # text, and never "missing"
    text_cols = set(header) if all_text else strict
    try:
        df = pd.read_csv(io.StringIO(text), sep=delim, skip_blank_lines=False, dtype={c: str for c in text_cols})
        if strict:  # ids as written: a second pass without the missing-value markers ("NA" is an id)
            ids = pd.read_csv(io.StringIO(text), sep=delim, skip_blank_lines=False, usecols=sorted(strict),
                              dtype=str, keep_default_na=False)
            for c in strict:
                df[c] = ids[c].to_numpy()
    except Exception as e:  # pandas raises many types
        raise InputError(f"Unreadable {what} '{p}' (read as {DELIMITERS[delim]}-separated): {type(e).__name__}: "
                         f"{_first_line(e)}; save it as a UTF-8 CSV with one header row and the same number of "
                         "cells on every line.") from None
    df.columns = [str(c).strip() for c in df.columns]
    stripped = {c.strip() for c in text_cols}
    for c in df.columns:
        if c in stripped:
            df[c] = df[c].map(lambda v: v.strip() if isinstance(v, str) else v)
        elif delim == ";" and (df[c].dtype == object or pd.api.types.is_string_dtype(df[c])):
            vals = df[c].dropna().astype(str).str.strip()  # decimal commas ("1,5") in a semicolon CSV
            if len(vals) and vals.str.fullmatch(_DECIMAL_COMMA + r"|[+-]?\d+").all() and vals.str.contains(",").any():
                df[c] = pd.to_numeric(df[c].astype(str).str.strip().str.replace(",", ".", regex=False),
                                      errors="coerce").where(df[c].notna())
    lines = np.arange(len(df)) + 2 + lead
    empty = df.apply(lambda col: col.isna() | col.astype(str).str.strip().eq(""), axis=0).all(axis=1).to_numpy() \
        if len(df.columns) else np.ones(len(df), bool)
    blank_lines = {i + 1 for i, ln in enumerate(all_lines) if not ln.strip()}
    skipped = [int(n) for n in lines[empty] if int(n) not in blank_lines]
    if skipped:
        log.warning("%s '%s': skipped %d row(s) with no value (line(s) %s)", what, p, len(skipped),
                    ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else ""))
    df = df.loc[~empty].reset_index(drop=True)
    df.attrs["lines"] = [int(n) for n in lines[~empty]]
    df.attrs["delimiter"] = DELIMITERS[delim]
    return df


def read_header(path: str | Path, what: str = "table") -> list[str]:
    """The stripped column names of a CSV (decoded and split as :func:`read_table` does)."""
    lines = _decode(Path(path), what).splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delim = _delimiter(first)
    return [c.strip() for c in next(csv.reader([first], delimiter=delim), [])]


def _delimiter(header: str) -> str:
    """The delimiter of a CSV: the candidate found most often in its header line (comma on a tie)."""
    return max(DELIMITERS, key=lambda d: (header.count(d), d == ","))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else "no details"


def _decode(p: Path, what: str) -> str:
    """The text of a (gzip) CSV file as UTF-8, without a byte-order mark; one-line InputError otherwise."""
    import gzip
    import zlib

    try:
        data = gzip.decompress(p.read_bytes()) if p.name.lower().endswith(".gz") else p.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"Unreadable {what} '{p}': {type(e).__name__}: {_first_line(e)}; "
                         "pass a readable CSV or Parquet file.") from None
    if data[:4] in (b"PK\x03\x04", b"\xd0\xcf\x11\xe0"):  # xlsx (zip) / xls (OLE2)
        raise InputError(f"Unreadable {what} '{p}': it is an Excel workbook (or another zip/Office file), not CSV "
                         "text; Excel: File > Save As > 'CSV UTF-8 (comma delimited)' and pass that file.")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"Unreadable {what} '{p}': the file is UTF-16 text (e.g. Excel's 'Unicode Text'); "
                         "save it as 'CSV UTF-8'.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        try:
            data.decode("cp1252")
            guess = " (it looks like Windows-1252/Latin-1 text)"
        except UnicodeDecodeError:
            guess = ""
        raise InputError(f"Unreadable {what} '{p}': not UTF-8 text{guess}: byte 0x{data[e.start]:02x} on line "
                         f"{line} cannot be decoded; save the file as UTF-8 (Excel: 'CSV UTF-8').") from None


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


@dataclass(frozen=True)
class Patient:
    id: str
    images: dict[str, Path]
    mask: Optional[Path] = None


@dataclass
class Cohort:
    """Patients with their files, and the clinical table (indexed by patient id)."""

    patients: list[Patient]
    clinical: Optional[pd.DataFrame] = None
    manifest_path: Optional[Path] = None
    clinical_path: Optional[Path] = None
    sequences: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.patients]

    def patient(self, pid: str) -> Patient:
        for p in self.patients:
            if p.id == pid:
                return p
        raise InputError(f"Unknown patient '{pid}': not in manifest '{self.manifest_path}'.")


def read_manifest(path: str | Path, id_column: str = "patient_id", sequences: tuple[str, ...] | None = None,
                  mask_column: Optional[str] = "mask") -> tuple[list[Patient], pd.DataFrame]:
    """Parse a manifest CSV. Returns the patients and the raw table (for duplicate checks).

    Every cell is read as text; ids must be plain names (:func:`check_ids`)."""
    p = Path(path)
    df = read_table(p, "manifest", id_columns=(id_column,), all_text=True)
    if id_column not in df.columns:
        raise InputError(
            f"Manifest '{p}' has no id column '{id_column}' (columns: {', '.join(df.columns)}{_delimiter_note(df)}); "
            f"add it or set data.id_column.")
    check_ids(df, id_column, f"Manifest '{p}'")
    seqs = tuple(sequences) if sequences else tuple(c for c in df.columns
                                                    if c not in (id_column, mask_column, SERIES_COLUMN))
    missing = [s for s in seqs if s not in df.columns]
    if missing:
        raise InputError(f"Manifest '{p}' lacks sequence column(s) {missing} (columns: {', '.join(df.columns)}"
                         f"{_delimiter_note(df)}); add them or change data.sequences.")
    base = p.parent
    patients = []
    for _, row in df.iterrows():
        pid = row[id_column]
        images = {s: _resolve(base, row[s]) for s in seqs if isinstance(row[s], str) and row[s].strip()}
        chosen = row.get(SERIES_COLUMN)
        if isinstance(chosen, str) and chosen.strip():  # DICOM folders of several series: the one named here
            from .dicom.series import apply_series_column

            uids = chosen.replace(";", " ").split()
            images = {s: apply_series_column(f, uids) for s, f in images.items()}
        mask = None
        if mask_column and mask_column in df.columns and isinstance(row[mask_column], str) and row[mask_column].strip():
            mask = _resolve(base, row[mask_column])
        patients.append(Patient(pid, images, mask))
    return patients, df


def _delimiter_note(df: pd.DataFrame) -> str:
    """For a table read as one column: which delimiter was assumed."""
    if len(df.columns) == 1 and "delimiter" in df.attrs:
        return f"; read as {df.attrs['delimiter']}-separated: use commas, semicolons or tabs between columns"
    return ""


def check_id(pid: object) -> bool:
    """Is ``pid`` a plain name: letters, digits, ``_ - .``, no leading ``.`` or ``-``, 1 to 128 characters?"""
    return isinstance(pid, str) and SAFE_ID.fullmatch(pid) is not None


def check_ids(df: pd.DataFrame, id_column: str, where: str) -> None:
    """Ids are data, never paths: refuse (one line, naming the line and the id) an empty or unsafe id."""
    lines = df.attrs.get("lines") or list(range(2, len(df) + 2))
    bad = [(n, v) for n, v in zip(lines, df[id_column]) if not check_id(v)]
    if not bad:
        return
    n, v = bad[0]
    more = f" (+{len(bad) - 1} more bad id(s))" if len(bad) > 1 else ""
    if not isinstance(v, str) or not v:
        raise InputError(f"{where}, line {n}: empty patient id in column '{id_column}'{more}; fill it in or delete "
                         "the row.")
    raise InputError(f"{where}, line {n}: patient id {shorten(v)!r} is not a plain name{more}; ids become file names, so "
                     "use only letters, digits, '_', '-' and '.' (no leading '.' or '-', at most 128 characters) "
                     "and rename the case in every table.")


def _resolve(base: Path, value: str) -> Path:
    q = Path(value.strip())
    return q if q.is_absolute() else (base / q)


def read_clinical(path: str | Path, id_column: str = "patient_id") -> pd.DataFrame:
    """The clinical table; its id column is text exactly as written (``007`` never matches ``7``)."""
    p = Path(path)
    df = read_table(p, "clinical table", id_columns=(id_column,))
    if id_column not in df.columns:
        raise InputError(f"Clinical table '{p}' has no id column '{id_column}' (columns: {', '.join(df.columns)}"
                         f"{_delimiter_note(df)}); add it or set data.id_column.")
    check_ids(df, id_column, f"Clinical table '{p}'")
    return df


def load_cohort(manifest: str | Path, clinical: str | Path | None = None, id_column: str = "patient_id",
                sequences: tuple[str, ...] | None = None, mask_column: Optional[str] = "mask") -> Cohort:
    patients, _ = read_manifest(manifest, id_column, sequences, mask_column)
    clin = read_clinical(clinical, id_column) if clinical else None
    seqs = tuple(sequences) if sequences else tuple(patients[0].images) if patients else ()
    return Cohort(patients, clin, Path(manifest), Path(clinical) if clinical else None, seqs)
