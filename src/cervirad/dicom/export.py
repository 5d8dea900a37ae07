"""A binary mask on a DICOM series' grid, written as a DICOM-SEG (highdicom) or an RTSTRUCT (pydicom).

Both reference the source series (every source SOP instance), carry a new SeriesInstanceUID and
SOPInstanceUID, the source's frame of reference, study and patient module (the standard requires
them, so a viewer or planning system files the object under the right study), and name the
algorithm (``cervirad <version>``, CRFE) and the segment/ROI label.

RTSTRUCT contours: each connected region of a slice is traced on the mask upsampled 2x
(OpenCV ``findContours``), so the polygon runs a quarter voxel outside the lesion's voxel centres
and inside the neighbours'; read back with the centre-inside rule of :mod:`.contours` it gives
the same voxels. Holes are written as inner contours (read back by XOR).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..files import atomic_path
from .series import quiet

ALGORITHM = "CRFE"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
# copied from the source image: patient, study, frame of reference (what a viewer files the object by)
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
           "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID")
FORMATS = ("nifti", "dicom-seg", "rtstruct")


SUFFIXES = {"dicom-seg": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}


def is_series(path: str | Path) -> bool:
    """Is a manifest image cell a DICOM series (a folder or ``folder#UID``)?"""
    from .series import split_ref

    return split_ref(Path(path))[0].is_dir()


def export_case(mask, image_path: str | Path, out_dir: Path, case: str, formats: tuple[str, ...],
                label: str = "GTV") -> list[Path]:
    """``mask`` (predicted on the series at ``image_path``) as ``<out>/<case>_seg.dcm`` and/or
    ``<case>_rtstruct.dcm`` for the DICOM formats in ``formats``; the files written."""
    from ..layout import case_file
    from .series import read_series

    wanted = [f for f in formats if f in SUFFIXES]
    if not wanted:
        return []
    image, _, files = read_series(image_path, case)
    written = []
    for fmt in wanted:
        target = case_file(out_dir, case, SUFFIXES[fmt])
        writer = write_seg if fmt == "dicom-seg" else write_rtstruct
        written.append(writer(mask, image, files, target, label, case))
    return written


def _sources(files: list[Path]):
    import pydicom

    return [pydicom.dcmread(f) for f in files]


def _check_grid(mask, image, case: str) -> np.ndarray:
    from ..io import geometry_mismatch

    mis = geometry_mismatch(image, mask)
    if mis:
        raise InputError(f"Cannot write a DICOM mask for case '{case}': the mask is not on its series' grid ({mis}); "
                         "write it as NIfTI (--format nifti).")
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(mask) > 0


@quiet
def write_seg(mask, image, files: list[Path], path: Path, label: str = "GTV", case: str = "?",
              series_number: int = 901) -> Path:
    """``mask`` (on ``image``, the series read from ``files`` in slice order) as a binary DICOM-SEG."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    arr = _check_grid(mask, image, case)
    sources = _sources(files)
    algorithm = hd.AlgorithmIdentificationSequence(name=f"cervirad {ALGORITHM}", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=arr.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="cervirad", manufacturer_model_name=f"cervirad {ALGORITHM}", software_versions=__version__,
        device_serial_number="cervirad", series_description=f"cervirad {ALGORITHM} {label}"[:64],
        content_label="CERVIRAD", omit_empty_frames=False)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


@quiet
def write_rtstruct(mask, image, files: list[Path], path: Path, label: str = "GTV", case: str = "?",
                   series_number: int = 902) -> Path:
    """``mask`` as an RTSTRUCT with one ROI ``label`` of CLOSED_PLANAR contours (see the module docstring)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = _check_grid(mask, image, case)  # an empty mask gives an ROI without contours
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    src = heads[0]
    now = _dt.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    for kw in _COPIED:
        setattr(ds, kw, src.get(kw, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), series_number, 1
    ds.SeriesDescription = f"cervirad {ALGORITHM} {label}"[:64]
    ds.Manufacturer, ds.ManufacturerModelName = "cervirad", f"cervirad {ALGORITHM}"
    ds.SoftwareVersions = __version__
    ds.StructureSetLabel = f"cervirad {ALGORITHM}"[:16]
    ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")

    series_item = Dataset()
    series_item.SeriesInstanceUID = src.SeriesInstanceUID
    series_item.ContourImageSequence = Sequence([_image_ref(h) for h in heads])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID, study_item.ReferencedSOPInstanceUID = STUDY_SOP_CLASS, src.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = src.FrameOfReferenceUID
    for_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_item])

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = 1, src.FrameOfReferenceUID, label
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"cervirad {__version__} {ALGORITHM}"
    ds.StructureSetROISequence = Sequence([roi])
    contours = Sequence()
    to_patient = _patient_transform(image)
    for z in range(arr.shape[0]):
        for poly in _trace(arr[z]):
            pts = to_patient(np.column_stack([poly, np.full(len(poly), float(z))]))
            c = Dataset()
            c.ContourImageSequence = Sequence([_image_ref(heads[z])])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            contours.append(c)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber, roi_contour.ROIDisplayColor = 1, [255, 0, 0]
    if len(contours):
        roi_contour.ContourSequence = contours
    ds.ROIContourSequence = Sequence([roi_contour])
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType, obs.ROIInterpreter = 1, 1, "GTV", ""
    ds.RTROIObservationsSequence = Sequence([obs])
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _image_ref(head):
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = head.SOPClassUID, head.SOPInstanceUID
    return ref


def _patient_transform(image):
    """Continuous voxel indices (N, 3) -> patient coordinates of ``image``."""
    origin = np.array(image.GetOrigin())
    m = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return lambda idx: idx @ m.T + origin


def _trace(slice_mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (continuous x, y indices) around every region and hole of one slice."""
    import cv2

    if not slice_mask.any():
        return []
    up = np.kron(slice_mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    found, _ = cv2.findContours(up, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in found:
        # upsampled regions are at least 2x2 voxels: every contour has >= 4 points
        polys.append((c.reshape(-1, 2).astype(float) - 0.5) / 2.0)
    return polys
