"""RTSTRUCT / DICOM-SEG -> masks on the real IBSI STS series, and masks -> SEG / RTSTRUCT -> masks."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from cervirad import __version__
from cervirad.dicom.contours import contour_mask
from cervirad.dicom.export import write_rtstruct, write_seg
from cervirad.dicom.series import read_series

from .conftest import PATIENTS, SMALL, copy_patient, sts_dicom, sts_nifti

pytestmark = pytest.mark.realdata


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def nifti_mask(pid: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(sts_nifti() / pid / "MR_T1_mask.nii.gz"))) > 0


@pytest.mark.parametrize("pid", [pytest.param(p, marks=pytest.mark.slow) if p in ("STS_001", "STS_005") else p
                                 for p in PATIENTS])  # the two larger ones (~3 s each) run in CI
def test_rtstruct_reproduces_the_nifti_mask(pid):
    """The shared RTSTRUCTs' per-contour SOP references match no image of the series: placement by
    patient coordinates must still give the upstream NIfTI mask (voxel centre inside the polygon)."""
    src = sts_dicom() / pid / "MR_T1"
    mask = contour_mask(src / "mask" / "RS.dcm", {"t1": src / "image"}, None, pid)
    m = sitk.GetArrayFromImage(mask) > 0
    ref = nifti_mask(pid)
    assert m.shape == ref.shape
    assert dice(m, ref) >= 0.99
    assert (m == ref).all()  # measured: identical voxels on all 4 patients


def _mask_with_hole_and_islands(pid: str, image) -> sitk.Image:
    arr = nifti_mask(pid)
    z = int(np.flatnonzero(arr.any(axis=(1, 2)))[len(np.flatnonzero(arr.any(axis=(1, 2)))) // 2])
    ys, xs = np.nonzero(arr[z])
    cy, cx = int(ys.mean()), int(xs.mean())
    arr[z, cy - 2:cy + 3, cx - 2:cx + 3] = False  # a hole
    arr[z, 0:3, 0:4] = True  # a second island on the same slice
    arr[z, 5, 5] = arr[z, 6, 6] = True  # single voxels touching diagonally
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(image)
    return out


def test_seg_round_trip_is_identical_and_its_tags_read_back(small_patient, tmp_path):
    import pydicom

    series, _ = small_patient
    image, info, files = read_series(series, SMALL)
    mask = _mask_with_hole_and_islands(SMALL, image)
    seg = write_seg(mask, image, files, tmp_path / "out" / "seg.dcm", label="GTV", case=SMALL)
    back = contour_mask(seg, {"t2w": series}, None, SMALL)
    assert (sitk.GetArrayFromImage(back) == sitk.GetArrayFromImage(mask)).all()
    assert back.GetOrigin() == image.GetOrigin() and back.GetSpacing() == image.GetSpacing()

    ds = pydicom.dcmread(seg)
    src = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.SegmentationType == "BINARY"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == info.uid
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == \
        {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert ds.SeriesInstanceUID != info.uid and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    segment = ds.SegmentSequence[0]
    assert segment.SegmentLabel == "GTV" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "cervirad CRFE"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Neoplasm"
    assert ds.SoftwareVersions == __version__ and ds.NumberOfFrames == len(files)


def test_rtstruct_round_trip_and_its_tags_read_back(small_patient, tmp_path):
    import pydicom

    series, _ = small_patient
    image, info, files = read_series(series, SMALL)
    mask = _mask_with_hole_and_islands(SMALL, image)
    rt = write_rtstruct(mask, image, files, tmp_path / "out" / "rt.dcm", label="GTV", case=SMALL)
    back = sitk.GetArrayFromImage(contour_mask(rt, {"t2w": series}, None, SMALL)) > 0
    want = sitk.GetArrayFromImage(mask) > 0
    assert dice(back, want) >= 0.99
    assert (back == want).all()  # measured: the quarter-voxel contours give the same voxels

    ds = pydicom.dcmread(rt)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == info.uid
    assert ds.SeriesInstanceUID != info.uid
    assert ds.StructureSetROISequence[0].ROIName == "GTV"
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "AUTOMATIC"
    assert "cervirad" in ds.StructureSetROISequence[0].ROIGenerationDescription


def test_holes_and_several_contours_per_slice_from_a_hand_made_rtstruct(small_patient):
    """Contours written by hand in patient coordinates: an outer square with an inner square (a
    hole) on one slice, two separate squares on another; per-contour SOP references left out."""
    import pydicom

    series, rs_path = small_patient
    image, _, _ = read_series(series, SMALL)

    def square(z, x0, y0, x1, y1):  # voxel-index corners -> patient-coordinate polygon
        pts = [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]
        return [c for p in pts for c in image.TransformContinuousIndexToPhysicalPoint(p)]

    ds = pydicom.dcmread(rs_path)
    template = ds.ROIContourSequence[0].ContourSequence[0]
    contours = []
    for z, corners in ((10, (20.5, 20.5, 40.5, 40.5)), (10, (25.5, 25.5, 30.5, 30.5)),
                       (12, (10.5, 10.5, 14.5, 14.5)), (12, (50.5, 50.5, 52.5, 60.5))):
        c = pydicom.Dataset()
        c.ContourGeometricType = template.ContourGeometricType
        c.ContourData = square(z, *corners)
        c.NumberOfContourPoints = 4
        contours.append(c)
    ds.ROIContourSequence[0].ContourSequence = pydicom.Sequence(contours)
    ds.save_as(rs_path)
    m = sitk.GetArrayFromImage(contour_mask(rs_path, {"t2w": series}, None, SMALL)) > 0
    want = np.zeros_like(m)
    want[10, 21:41, 21:41] = True
    want[10, 26:31, 26:31] = False  # the hole
    want[12, 11:15, 11:15] = True
    want[12, 51:61, 51:53] = True
    assert (m == want).all()
