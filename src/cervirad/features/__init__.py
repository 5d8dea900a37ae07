"""Feature extraction (SPEC §6): PyRadiomics (paper preset, 851 columns), 9 OpenCV histogram
features and 8 clinical variables per patient, with the label ``Pathologic_typing``.

Entry point: :func:`run` (``cervirad extract-features``); see :mod:`.stage` for the outputs.
Heavy libraries (PyRadiomics, OpenCV, joblib, dask) are imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..rundir import RunDir


def run(cfg: "Config", run: "RunDir", masks: str | None = None) -> Path:
    """Extract features of the run's cohort with ``masks`` = "manual" | "predicted"
    (default ``cfg.features.masks``); returns ``<run>/features`` or ``<run>/features/predicted``."""
    from .stage import run as _run

    return _run(cfg, run, masks)


def load_features(run_path: str | Path, masks: str = "manual"):
    """The feature table and its predictor columns: ``(DataFrame, list[str])``.

    Predictors exclude the columns ``columns.json`` lists as ``excluded_from_predictors``
    (treatment variables unless ``features.include_treatment``).
    """
    import json

    import pandas as pd

    from ..errors import InputError
    from .stage import output_dir

    folder = Path(run_path) / output_dir(masks)
    table, columns = folder / "features.parquet", folder / "columns.json"
    if not table.is_file() or not columns.is_file():
        raise InputError(f"Run directory '{run_path}' has no {output_dir(masks)}/features.parquet; run "
                         f"`cervirad extract-features --masks {masks}` first.")
    return pd.read_parquet(table), json.loads(columns.read_text(encoding="utf-8"))["predictors"]


def summary(folder: str | Path) -> str:
    """One line about an output folder: patients, feature columns, errors."""
    import json

    folder = Path(folder)
    counts = json.loads((folder / "column_counts.json").read_text(encoding="utf-8"))
    n_rows = sum(1 for _ in (folder / "features.csv").open(encoding="utf-8")) - 1
    n_err = sum(1 for _ in (folder / "errors.csv").open(encoding="utf-8")) - 1
    return f"{n_rows} patients x {counts['total']} feature columns, {n_err} error(s)"
