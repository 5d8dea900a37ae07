"""DICOM in and out: image series, contour masks (RTSTRUCT, DICOM-SEG), DICOM trees as cohorts,
and predicted masks written back as DICOM-SEG / RTSTRUCT.

- :mod:`.series`: which series a folder holds; read one (``folder#SeriesInstanceUID`` names it).
- :mod:`.contours`: an RTSTRUCT ROI or a SEG segment as a binary mask on its image series' grid.
- :mod:`.export`: a predicted mask as a DICOM-SEG (highdicom) or an RTSTRUCT (pydicom).
- :mod:`.index`: ``cervirad index-dicom``: a tree of patient folders -> a manifest.

Nothing here copies a patient's name, birth date or other identifying attribute into a message,
a log line or a table; only the DICOM files written by :mod:`.export` carry the source's patient
module (the standard requires it, so a viewer files the SEG under the right study).
"""
