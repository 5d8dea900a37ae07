"""Feature extraction (SPEC §6): PyRadiomics (paper preset, 851 columns), 9 OpenCV histogram
features and 8 clinical variables per patient, with the label ``Pathologic_typing``.

Stage functions: :func:`.stage.run_manual` and :func:`.stage.run_predicted` (stages ``features``
and ``features-predicted`` of :mod:`cervirad.stages`); see :mod:`.stage` for the outputs, and
:func:`summary` for the command line's one line about them. Modules: :mod:`.cases` (one patient's
extraction, cached), :mod:`.radiomics_ext` (PyRadiomics), :mod:`.histogram`, :mod:`.clinical`,
:mod:`.ibsi` (the IBSI phantom check), :mod:`.perturbation` (perturbation robustness, ICC).
Heavy libraries (PyRadiomics, OpenCV, joblib, dask) are imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path

from ..files import read_json


def summary(folder: str | Path) -> str:
    """One line about an output folder: patients, feature columns, errors."""
    from ..layout import COLUMN_COUNTS, ERRORS, FEATURES_CSV

    folder = Path(folder)
    counts = read_json(folder / COLUMN_COUNTS)
    n_rows = sum(1 for _ in (folder / FEATURES_CSV).open(encoding="utf-8")) - 1
    n_err = sum(1 for _ in (folder / ERRORS).open(encoding="utf-8")) - 1
    return f"{n_rows} patients x {counts['total']} feature columns, {n_err} error(s)"
