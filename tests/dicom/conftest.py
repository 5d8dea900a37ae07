"""Real DICOM (../shared/data/ibsi_sts_dicom) copied into tmp folders, with made-up identity tags
and decoy series, for the DICOM tests. Nothing is ever written under the shared data."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import require_shared

# identity planted in every copied file (must never leak); a one-component name makes highdicom warn, quoting it
NAME, BIRTH = "Quuxdoejane", "19491231"
PATIENTS = ("STS_001", "STS_002", "STS_003", "STS_005")
SMALL = "STS_002"  # 35 slices, 17k tumour voxels


def sts_dicom() -> Path:
    return require_shared("ibsi_sts_dicom")


def sts_nifti() -> Path:
    return require_shared("ibsi_sts_mri")


def copy_series(src: Path, dst: Path, *, new_uid: bool = False, description: str | None = None,
                localizer: bool = False, limit: int | None = None) -> str:
    """Copy the DICOM files of ``src`` into ``dst`` with the planted identity; optionally as another
    series (new Series/SOP Instance UIDs, description, LOCALIZER image type). Returns its series UID."""
    import pydicom
    from pydicom.uid import generate_uid

    dst.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid() if new_uid else None
    files = sorted(src.glob("*.dcm"))[:limit]
    uid = ""
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientBirthDate = NAME, BIRTH
        if series_uid:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if description is not None:
            ds.SeriesDescription = description
        if localizer:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        name = f"{'d' if new_uid else ''}{i:06d}.dcm"
        ds.save_as(dst / name)
        uid = str(ds.SeriesInstanceUID)
    return uid


def copy_rtstruct(src: Path, dst: Path, *, roi_names: list[str] | None = None, series_uid: str | None = None) -> Path:
    """Copy an RTSTRUCT with the planted identity; optionally renamed ROIs / another referenced series."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(src)
    ds.PatientName, ds.PatientBirthDate = NAME, BIRTH
    if roi_names is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        for r, name in zip(ds.StructureSetROISequence, roi_names):
            r.ROIName = name
    if series_uid is not None:
        ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
            .SeriesInstanceUID = series_uid
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def copy_patient(pid: str, root: Path) -> tuple[Path, Path]:
    """``root/<pid>/image`` (the series) and ``root/<pid>/RS.dcm``."""
    src = sts_dicom() / pid / "MR_T1"
    copy_series(src / "image", root / pid / "image")
    return root / pid / "image", copy_rtstruct(src / "mask" / "RS.dcm", root / pid / "RS.dcm")


def build_tree(root: Path, pids: tuple[str, ...]) -> Path:
    """A PACS-like tree: per patient the real series plus, in the SAME folder, a copy with another
    description ('ADC map', same grid), a localiser whose description also says MR_T1, the real
    RTSTRUCT and a second RTSTRUCT with other ROIs on the same series."""
    for pid in pids:
        src = sts_dicom() / pid / "MR_T1"
        series = root / pid / "study" / "mr"
        uid = copy_series(src / "image", series)
        copy_series(src / "image", series, new_uid=True, description="ADC map")
        copy_series(src / "image", root / pid / "study" / "loc", new_uid=True, description="localizer MR_T1",
                    localizer=True, limit=3)
        copy_rtstruct(src / "mask" / "RS.dcm", root / pid / "rt" / "RS.dcm")
        copy_rtstruct(src / "mask" / "RS.dcm", root / pid / "rt" / "RS_organs.dcm", roi_names=["Bladder"],
                      series_uid=uid)
    return root


@pytest.fixture
def small_patient(tmp_path) -> tuple[Path, Path]:
    return copy_patient(SMALL, tmp_path / "dicom")


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``cervirad ARGS`` run in this process."""
    from cervirad.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["cervirad", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return (0 if e.value.code is None else e.value.code), out, err


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(capsys, monkeypatch, *args)


def one_error_line(res, *needles) -> str:
    code, _, err = res
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("cervirad: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert NAME not in err and BIRTH not in err
    return lines[0]
