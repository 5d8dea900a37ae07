"""Classification stage (SPEC §7): leakage-safe selection + SMOTE + RF/XGBoost/SVM/LR, with CIs.

Stage functions (:mod:`cervirad.stages`): :func:`.stage.run` classifies a run's
``features/features.parquet`` on its patient split; :func:`.stage.run_table` classifies any
table by repeated nested cross-validation (``cervirad classify --features``, via
:func:`cervirad.pipeline.classify_table`). ``predict_table(...)`` applies a saved model;
``outputs(path)`` lists metrics and figures for the report.
"""
from __future__ import annotations

from .predict import predict_table
from .stage import outputs

__all__ = ["predict_table", "outputs"]
