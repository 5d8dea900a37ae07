"""A contour object (RTSTRUCT ROI or DICOM-SEG segment) as a binary mask on its image series' grid.

The kind is read from the file (Modality), never from its name. The ROI or segment is chosen by
``data.mask_roi``: an exact name (case-insensitive) or else a regular expression matching the
whole name (case-insensitive); with no ``mask_roi``, the only one. The object must reference the
image series it is drawn on (SeriesInstanceUID, frame of reference); a mismatch is refused.

RTSTRUCT rasterisation (parsing: pydicom): each CLOSED_PLANAR contour is placed by its patient
coordinates, mapped into the series' continuous voxel indices; the slice is the one its points
lie on (within 0.3 of a slice), never the per-contour SOP reference, which re-exports break. A
voxel is inside when its centre lies inside the polygon (matplotlib's point-in-polygon test, the
"plain polygon fill in voxel coordinates"); the contours of one slice are combined by XOR
(even-odd), so an inner contour is a hole and several outer contours are several islands.

DICOM-SEG (parsing: highdicom): the segment's frames are placed by their plane positions
(highdicom builds the volume), then resampled (nearest neighbour) onto the series grid, which
is a copy when the SEG was made on that grid.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from .series import SeriesInfo, is_dicom, quiet, read_header, read_series, split_ref

CONTOUR_KINDS = ("RTSTRUCT", "SEG")
SLICE_TOLERANCE = 0.3  # a contour may sit this fraction of a slice off the slice centre


def contour_kind(path: str | Path, case: str = "?") -> Optional[str]:
    """'RTSTRUCT' or 'SEG' for such a DICOM file, else None (a volume, a folder, another DICOM);
    a one-line InputError for a DICOM file whose header cannot be read (truncated, damaged)."""
    p = Path(path)
    if not p.is_file() or not is_dicom(p):
        return None
    ds = read_header(p)
    if ds is None:
        raise InputError(f"Damaged DICOM file for case '{case}': '{p}' is truncated or unreadable (its header "
                         "cannot be parsed); copy or re-export it.")
    modality = str(ds.get("Modality", "")).upper() if ds is not None else ""
    return modality if modality in CONTOUR_KINDS else None


def pick_name(names: list[str], pattern: Optional[str], what: str, case: str, path: Path) -> str:
    """The one name selected by ``pattern`` (see the module docstring); one-line InputError otherwise."""
    shown = ", ".join(f"'{n}'" for n in names) or "none"
    if pattern is None:
        if len(names) == 1:
            return names[0]
        raise InputError(f"Ambiguous {what} for case '{case}': '{path}' holds {len(names)} ({shown}) and "
                         "data.mask_roi is not set; set data.mask_roi to one name or a regular expression.")
    exact = [n for n in names if n.casefold() == pattern.casefold()]
    if len(exact) == 1:
        return exact[0]
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise InputError(f"Invalid data.mask_roi {pattern!r}: not a regular expression ({e}); write a name or a "
                         "valid regular expression.") from None
    hits = exact or [n for n in names if rx.fullmatch(n)]
    if len(hits) == 1:
        return hits[0]
    found = "none of them matches" if not hits else f"{len(hits)} match"
    raise InputError(f"No single {what} '{pattern}' for case '{case}': '{path}' holds {shown}; {found}; set "
                     "data.mask_roi to exactly one of those names.")


@quiet
def contour_mask(mask_path: str | Path, images: dict[str, Path], roi: Optional[str], case: str):
    """The binary (uint8) mask of the contour file ``mask_path`` on the grid of the image series it
    references, which must be one of the case's ``images``."""
    import pydicom

    p = Path(mask_path)
    kind = contour_kind(p)
    if kind is None:
        raise InputError(f"Unreadable mask for case '{case}': '{p}' is not an RTSTRUCT or DICOM-SEG file; pass a "
                         "volume (NIfTI/NRRD/MHA), an RTSTRUCT or a DICOM-SEG.")
    try:
        ds = pydicom.dcmread(p)
    except Exception as e:  # truncated or damaged file
        raise InputError(f"Unreadable {kind} mask for case '{case}': '{p}' is damaged or truncated "
                         f"({type(e).__name__}); copy or re-export it.") from None
    series_uid = _referenced_series(ds, kind)
    image, info = _referenced_image(images, series_uid, kind, case, p)
    if kind == "RTSTRUCT":
        return rtstruct_mask(ds, image, info, roi, case, p)
    return seg_mask(p, image, info, roi, case)


def _referenced_series(ds, kind: str) -> Optional[str]:
    if kind == "SEG":
        for item in ds.get("ReferencedSeriesSequence", []):
            return str(item.SeriesInstanceUID)
        return None
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        for st in fr.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                return str(se.SeriesInstanceUID)
    return None


def _referenced_image(images: dict[str, Path], series_uid: Optional[str], kind: str, case: str, path: Path):
    """(volume, series) of the case's image that ``series_uid`` names."""
    dicom_images = {seq: f for seq, f in images.items() if split_ref(f)[0].is_dir()}
    if not dicom_images:
        raise InputError(f"{kind} mask for case '{case}' ('{path}') needs its image series as DICOM, but the case's "
                         "images are volume files; point the manifest's image columns at the DICOM series folders.")
    seen = []
    for seq, f in dicom_images.items():
        image, info, files = read_series(f, case, seq)
        if series_uid is None or info.uid == series_uid:
            info.files = files
            return image, info
        seen.append(f"{seq} {info.uid}")
    raise InputError(f"{kind} mask for case '{case}' references another series: '{path}' was drawn on series "
                     f"{series_uid}, the case's images are {'; '.join(seen)}; pass the RTSTRUCT/SEG drawn on these "
                     "images or point the image column at the referenced series.")


# --------------------------------------------------------------------------- RTSTRUCT
def rtstruct_mask(ds, image, info: SeriesInfo, roi: Optional[str], case: str, path: Path):
    """Rasterise one ROI of the RTSTRUCT dataset ``ds`` onto ``image`` (see the module docstring)."""
    import SimpleITK as sitk

    rois = {int(r.ROINumber): r for r in ds.get("StructureSetROISequence", [])}
    names = [str(r.ROIName) for r in rois.values()]
    name = pick_name(names, roi, "ROI", case, path)
    number = next(n for n, r in rois.items() if str(r.ROIName) == name)
    ref_for = str(rois[number].get("ReferencedFrameOfReferenceUID", "") or "")
    if ref_for and info.frame_of_reference and ref_for != info.frame_of_reference:
        raise InputError(f"RTSTRUCT ROI '{name}' of case '{case}' is in another frame of reference ({ref_for}) than "
                         f"its image series {info.uid} ({info.frame_of_reference}); register or re-export the contours.")
    item = next((c for c in ds.get("ROIContourSequence", []) if int(c.ReferencedROINumber) == number), None)
    contours = [c for c in (item.get("ContourSequence", []) if item is not None else [])
                if str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper() == "CLOSED_PLANAR"]
    if not contours:
        raise InputError(f"Empty ROI '{name}' for case '{case}': '{path}' has no closed planar contour for it; draw "
                         "the lesion or choose another ROI with data.mask_roi.")
    size = image.GetSize()
    arr = np.zeros(size[::-1], dtype=bool)  # (z, y, x)
    to_index = _index_transform(image)
    for k, c in enumerate(contours):
        pts = _contour_points(c)
        if pts.size < 9 or pts.size % 3:
            raise InputError(f"Degenerate contour in ROI '{name}' of case '{case}': contour {k + 1} of '{path}' has "
                             f"{pts.size // 3} point(s), a closed contour needs at least 3; delete or redraw it.")
        idx = to_index(pts.reshape(-1, 3))
        z = float(np.mean(idx[:, 2]))
        zi = int(round(z))
        if np.max(np.abs(idx[:, 2] - zi)) > SLICE_TOLERANCE or not 0 <= zi < size[2]:
            raise InputError(f"Contour off the image slices in ROI '{name}' of case '{case}': contour {k + 1} of "
                             f"'{path}' lies at slice index {z:.2f} of series {info.uid} ({size[2]} slices); the "
                             "contours were drawn on another grid: re-export them on this series.")
        arr[zi] ^= _fill(idx[:, :2], (size[1], size[0]))
    if not arr.any():
        raise InputError(f"Empty ROI '{name}' for case '{case}': its contours in '{path}' enclose no voxel centre of "
                         f"series {info.uid}; check the ROI or choose another with data.mask_roi.")
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(image)
    return out


def _contour_points(item) -> np.ndarray:
    """ContourData as floats, parsed from the raw bytes when pydicom has not decoded it yet (its
    decimal-string conversion is the slow part of reading a large structure set)."""
    try:
        value = item.get_item(0x30060050).value if "ContourData" in item else []
    except KeyError:
        return np.zeros(0)
    if isinstance(value, bytes):
        text = value.replace(b"\x00", b" ").decode("ascii", "replace").strip()
        try:
            return np.array([float(v) for v in text.split("\\") if v.strip()], dtype=float)
        except ValueError:
            raise InputError("ContourData holds a value that is not a number; re-export the RTSTRUCT.") from None
    return np.asarray(value if value is not None else [], dtype=float).ravel()


def _index_transform(image):
    """Patient coordinates (N, 3) -> continuous voxel indices (x, y, z) of ``image``."""
    origin = np.array(image.GetOrigin())
    m = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    inv = np.linalg.inv(m)
    return lambda pts: (pts - origin) @ inv.T


def _fill(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Voxels (rows, cols) whose centre lies inside the polygon ``xy`` (continuous x, y indices)."""
    from matplotlib.path import Path as Polygon

    out = np.zeros(shape, dtype=bool)
    x0, y0 = max(0, int(np.floor(xy[:, 0].min()))), max(0, int(np.floor(xy[:, 1].min())))
    x1, y1 = min(shape[1] - 1, int(np.ceil(xy[:, 0].max()))), min(shape[0] - 1, int(np.ceil(xy[:, 1].max())))
    if x1 < x0 or y1 < y0:
        return out
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    inside = Polygon(xy, closed=False).contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    out[y0:y1 + 1, x0:x1 + 1] = inside.reshape(yy.shape)
    return out


# --------------------------------------------------------------------------- DICOM-SEG
def seg_mask(path: Path, image, info: SeriesInfo, roi: Optional[str], case: str):
    """One segment of the DICOM-SEG at ``path`` on ``image``'s grid."""
    import highdicom as hd
    import SimpleITK as sitk

    try:
        seg = hd.seg.segread(path)
    except Exception as e:  # damaged, truncated or not a valid SEG
        raise InputError(f"Unreadable DICOM-SEG mask for case '{case}': '{path}' could not be read "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); re-export it.") \
            from None
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    name = pick_name(list(segments.values()), roi, "segment", case, path)
    number = next(n for n, label in segments.items() if label == name)
    seg_for = str(seg.get("FrameOfReferenceUID", "") or "")
    if seg_for and info.frame_of_reference and seg_for != info.frame_of_reference:
        raise InputError(f"DICOM-SEG of case '{case}' is in another frame of reference ({seg_for}) than its image "
                         f"series {info.uid} ({info.frame_of_reference}); re-export it on the series.")
    try:
        vol = seg.get_volume(segment_numbers=[number], combine_segments=True, relabel=True, dtype=np.uint8)
    except Exception as e:  # frames that do not form a regular volume
        raise InputError(f"DICOM-SEG segment '{name}' of case '{case}' cannot be placed as a volume ('{path}': "
                         f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); re-export it on the "
                         "series' slices.") from None
    if vol is None or not np.any(vol.array):
        raise InputError(f"Empty segment '{name}' for case '{case}': '{path}' has no voxel in it; draw the lesion or "
                         "choose another segment with data.mask_roi.")
    m = sitk.Cast(vol.to_simpleitk() > 0, sitk.sitkUInt8)
    out = sitk.Resample(m, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(out).any():
        raise InputError(f"DICOM-SEG segment '{name}' of case '{case}' lies outside its image series {info.uid}; "
                         "re-export it on this series.")
    return out
