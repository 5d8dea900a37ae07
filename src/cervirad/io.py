"""The one module that knows file formats: volumes, manifests, clinical tables.

Volumes: NIfTI (``.nii``, ``.nii.gz``), NRRD, MHA/MHD, and DICOM series folders, all read
with SimpleITK. A cohort is a manifest CSV (an id column, one column per sequence such as
``t2w``/``dwi``/``adc``, optional ``mask``) plus a clinical CSV keyed by the same id.
Relative paths in the manifest are relative to the manifest's folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .errors import InputError
from .rundir import atomic_path

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


# --------------------------------------------------------------------------- volumes
def read_image(path: str | Path, case: str = "?", role: str = "image") -> sitk.Image:
    """Read a 3D volume (NIfTI, NRRD, MHA or a DICOM series folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"Missing {role} file for case '{case}': '{p}' does not exist; fix the path in the manifest.")
    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(p))
            if not series:
                raise InputError(
                    f"Unreadable {role} for case '{case}': folder '{p}' holds no DICOM series; "
                    "point the manifest at a volume file or a DICOM series folder.")
            files = reader.GetGDCMSeriesFileNames(str(p), series[0])
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
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
        return f"spacing {tuple(np.round(sa, 4))} vs {tuple(np.round(sb, 4))}"
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if np.any(np.abs(oa - ob) > tol * np.maximum(sa, 1.0) * 10):
        return f"origin {tuple(np.round(oa, 3))} vs {tuple(np.round(ob, 3))}"
    if np.any(np.abs(np.array(a.GetDirection()) - np.array(b.GetDirection())) > tol):
        return "direction cosines differ"
    return None


def geometry_mismatch_message(case: str, sequence: str, mismatch: str) -> str:
    """The one-line error for an image/mask pair on different grids (validate, extract-features)."""
    return (f"Image/mask geometry mismatch for case '{case}': {sequence} vs mask {mismatch}; "
            "resample the mask onto the image grid or raise data.geometry_tolerance.")


# --------------------------------------------------------------------------- tables
def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """Read a CSV (optionally gzip) or Parquet table."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Missing {what}: '{p}' does not exist; check the path.")
    try:
        if p.suffix == ".parquet":
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except Exception as e:  # pandas raises many types
        raise InputError(f"Unreadable {what} '{p}': {type(e).__name__}: {str(e).splitlines()[0][:160]}; "
                         "save it as a UTF-8 CSV or Parquet file.") from None


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
    """Parse a manifest CSV. Returns the patients and the raw table (for duplicate checks)."""
    p = Path(path)
    df = read_table(p, "manifest")
    df.columns = [str(c).strip() for c in df.columns]
    if id_column not in df.columns:
        raise InputError(
            f"Manifest '{p}' has no id column '{id_column}' (columns: {', '.join(df.columns)}); "
            f"add it or set data.id_column.")
    seqs = tuple(sequences) if sequences else tuple(c for c in df.columns if c not in (id_column, mask_column))
    missing = [s for s in seqs if s not in df.columns]
    if missing:
        raise InputError(f"Manifest '{p}' lacks sequence column(s) {missing} (columns: {', '.join(df.columns)}); "
                         "add them or change data.sequences.")
    base = p.parent
    patients = []
    for _, row in df.iterrows():
        pid = str(row[id_column]).strip()
        images = {s: _resolve(base, row[s]) for s in seqs if isinstance(row[s], str) and row[s].strip()}
        mask = None
        if mask_column and mask_column in df.columns and isinstance(row[mask_column], str) and row[mask_column].strip():
            mask = _resolve(base, row[mask_column])
        patients.append(Patient(pid, images, mask))
    return patients, df


def _resolve(base: Path, value: str) -> Path:
    q = Path(value.strip())
    return q if q.is_absolute() else (base / q)


def read_clinical(path: str | Path, id_column: str = "patient_id") -> pd.DataFrame:
    p = Path(path)
    df = read_table(p, "clinical table")
    df.columns = [str(c).strip() for c in df.columns]
    if id_column not in df.columns:
        raise InputError(f"Clinical table '{p}' has no id column '{id_column}' (columns: {', '.join(df.columns)}); "
                         "add it or set data.id_column.")
    df[id_column] = df[id_column].astype(str).str.strip()
    return df


def load_cohort(manifest: str | Path, clinical: str | Path | None = None, id_column: str = "patient_id",
                sequences: tuple[str, ...] | None = None, mask_column: Optional[str] = "mask") -> Cohort:
    patients, _ = read_manifest(manifest, id_column, sequences, mask_column)
    clin = read_clinical(clinical, id_column) if clinical else None
    seqs = tuple(sequences) if sequences else tuple(patients[0].images) if patients else ()
    return Cohort(patients, clin, Path(manifest), Path(clinical) if clinical else None, seqs)
