"""DICOM in and out: image series, contour masks (RTSTRUCT, DICOM-SEG), DICOM trees as cohorts,
and predicted masks written back as DICOM-SEG / RTSTRUCT.

- :mod:`.series`: which series a folder holds; read one (``folder#SeriesInstanceUID`` names it).
- :mod:`.contours`: an RTSTRUCT ROI or a SEG segment as a binary mask on its image series' grid.
- :mod:`.export`: a predicted mask as a DICOM-SEG (highdicom) or an RTSTRUCT (pydicom).
- :mod:`.index`: ``cervirad index-dicom``: a tree of patient folders -> a manifest.

Libraries (measured on the 4 IBSI STS patients of ../shared/data/ibsi_sts_dicom against their
NIfTI masks): pydicom 3 parses headers and RTSTRUCTs; highdicom 0.28 reads and writes DICOM-SEG
(maintained, standard-conformant, places frames by plane position). rt-utils 1.2.7 refuses every
patient (it insists on per-contour SOP references, which these files' do not match; its
``warn_only`` mode fails with a NameError); platipy 0.7.2 needs pydicom 2 (pip would downgrade
pydicom and pandas and add opencv-python beside the headless build) and, with a shim, rounds
vertices to voxels: Dice 0.968-0.983; pydicom-seg 0.4.1 requires numpy < 2. So the RTSTRUCT
rasteriser is cervirad's own, a voxel-centre point-in-polygon test (matplotlib), which gives the
NIfTI masks voxel for voxel; the RTSTRUCT writer is pydicom + OpenCV contours.

Nothing here copies a patient's name, birth date or other identifying attribute into a message,
a log line or a table; only the DICOM files written by :mod:`.export` carry the source's patient
module (the standard requires it, so a viewer files the SEG under the right study).
"""
