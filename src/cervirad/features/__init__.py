"""Feature extraction (SPEC §6): PyRadiomics (paper preset, 851 columns), 9 OpenCV histogram
features and 8 clinical variables per patient, with the label ``Pathologic_typing``.

Stage functions: :func:`.stage.run_manual` and :func:`.stage.run_predicted` (stages ``features``
and ``features-predicted`` of :mod:`cervirad.stages`); see :mod:`.stage` for the outputs.
Heavy libraries (PyRadiomics, OpenCV, joblib, dask) are imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path

from ..files import read_json
def load_features(run_path: str | Path, masks: str = "manual"):
    """The feature table and its predictor columns: ``(DataFrame, list[str])``.

    Predictors exclude the columns ``columns.json`` lists as ``excluded_from_predictors``
    (treatment variables unless ``features.include_treatment``).
    """
    import pandas as pd

    from ..errors import InputError
    from ..layout import COLUMNS, Layout

    run = Layout(run_path)
    table, columns = run.features_table(masks), run.features_dir(masks) / COLUMNS
    if not table.is_file() or not columns.is_file():
        raise InputError(f"Run directory '{run_path}' has no {table.relative_to(run.root)}; run "
                         f"`cervirad extract-features --masks {masks}` first.")
    return pd.read_parquet(table), read_json(columns)["predictors"]


def summary(folder: str | Path) -> str:
    """One line about an output folder: patients, feature columns, errors."""
    from ..layout import COLUMN_COUNTS, ERRORS, FEATURES_CSV

    folder = Path(folder)
    counts = read_json(folder / COLUMN_COUNTS)
    n_rows = sum(1 for _ in (folder / FEATURES_CSV).open(encoding="utf-8")) - 1
    n_err = sum(1 for _ in (folder / ERRORS).open(encoding="utf-8")) - 1
    return f"{n_rows} patients x {counts['total']} feature columns, {n_err} error(s)"
