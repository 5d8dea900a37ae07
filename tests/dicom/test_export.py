"""`cervirad segment --format dicom-seg|rtstruct|nifti` on a DICOM series (an untrained CRFE checkpoint:
the content of the mask does not matter here, its file format and references do)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cervirad import __version__
from cervirad.dicom.contours import contour_mask
from cervirad.dicom.series import read_series

from .conftest import BIRTH, NAME, SMALL, copy_series, one_error_line, sts_dicom

pytestmark = pytest.mark.realdata


@pytest.mark.slow
def test_segment_writes_a_seg_and_an_rtstruct_over_the_source_series(tmp_path):
    from tests.segmentation.test_infer import _checkpoint

    series = tmp_path / "dicom" / "image"
    copy_series(sts_dicom() / SMALL / "MR_T1" / "image", series, limit=6)  # 6 slices: inference stays quick
    ck = _checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out"
    # a subprocess, so that every warning and log line reaches the stderr checked below
    exe = Path(sys.executable).parent / "cervirad"
    p = subprocess.run([str(exe), "segment", "--model", str(ck), "--input", str(series), "--out", str(out),
                        "--format", "dicom-seg", "--format", "rtstruct", "--format", "nifti"],
                       capture_output=True, text=True)
    stdout, err = p.stdout, p.stderr
    assert p.returncode == 0, err
    case = series.name  # a DICOM series folder is one case named by the folder
    seg, rt, nii = out / f"{case}_seg.dcm", out / f"{case}_rtstruct.dcm", out / f"{case}.nii.gz"
    assert seg.is_file() and rt.is_file() and nii.is_file()
    image, info, files = read_series(series)
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(nii))) > 0
    # the SEG reads back as the NIfTI mask, voxel for voxel, on the series grid
    assert predicted.any()  # the seeded untrained net marks some voxels: the read-backs below are not vacuous
    for written in (seg, rt):  # both read back as the NIfTI mask, voxel for voxel, on the series grid
        back = sitk.GetArrayFromImage(contour_mask(written, {"t2w": series}, None, SMALL)) > 0
        assert (back == predicted).all()
    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == info.uid
    assert ds.SeriesInstanceUID != info.uid
    assert ds.SegmentSequence[0].SegmentLabel == "GTV"
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "cervirad CRFE"
    assert ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == __version__
    assert ds.NumberOfFrames == len(files)
    # each frame says which source image it segments (what a viewer overlays it on): that slice's voxels
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = ds.pixel_array.reshape(len(files), *predicted.shape[1:]) > 0
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        src = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.array_equal(frames[k], predicted[sops.index(src)])
    r = pydicom.dcmread(rt)
    assert r.Modality == "RTSTRUCT" and r.StructureSetROISequence[0].ROIName == "GTV"
    ref = r.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == info.uid and len(ref.ContourImageSequence) == len(files)
    # the console says nothing about the patient
    assert NAME not in stdout + err and BIRTH not in stdout + err


def test_dicom_formats_need_dicom_input(tmp_path, cli):
    from tests.segmentation.test_infer import _checkpoint, _volume

    ck = _checkpoint(tmp_path / "model.pt")
    _volume(tmp_path / "case_a.nii.gz")
    one_error_line(cli("segment", "--model", ck, "--input", tmp_path / "case_a.nii.gz", "--out", tmp_path / "o",
                       "--format", "dicom-seg"), "needs DICOM input", "case_a")
    one_error_line(cli("segment", "--model", ck, "--input", tmp_path / "case_a.nii.gz", "--out", tmp_path / "o",
                       "--format", "png"), "Unknown --format png")
