"""Classification stage (SPEC §7): leakage-safe selection + SMOTE + RF/XGBoost/SVM/LR, with CIs.

Stage functions (:mod:`cervirad.stages`): :func:`.stage.run` classifies a run's
``features/features.parquet`` on its patient split; :func:`.stage.run_table` classifies any
table by repeated nested cross-validation (``cervirad classify --features``, via
:func:`cervirad.pipeline.classify_table`). ``predict_table(...)`` applies a saved model.

Modules by job: the stage's flow (:mod:`.stage`) reads its inputs (:mod:`.inputs`, :mod:`.data`), fits
(:mod:`.core`: :mod:`.search` over :mod:`.estimators`, with :mod:`.smote`, :mod:`.calibration`, the
:mod:`.harmonize` and :mod:`.robust_filter` steps) and writes one evaluation's artifacts (:mod:`.results`:
:mod:`.scores` with the formulas and intervals of :mod:`.metrics`, :mod:`.card`, :mod:`.figures`,
:mod:`.predicted` for the predicted-mask features); its further parts each return their metrics.json keys:
:mod:`.table1`, :mod:`.targets`, :mod:`.ablation`, :mod:`.harmonize_report`, :mod:`.robust_filter_report`.
:mod:`.predict` applies a saved model; :mod:`.coverage` simulates the intervals' coverage (tests, benchmark).
"""
from __future__ import annotations

from .predict import predict_table

__all__ = ["predict_table"]
