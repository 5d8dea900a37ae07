"""Classification stage (SPEC §7): leakage-safe selection + SMOTE + RF/XGBoost/SVM/LR, with CIs.

``run(cfg, run)`` classifies a run's ``features/features.parquet`` on its patient split;
``run_table(cfg, table_path, id_column, label_column, out_dir)`` classifies any table by
repeated nested cross-validation; ``predict_table(...)`` applies a saved model;
``outputs(path)`` lists metrics and figures for the report.
"""
from __future__ import annotations

from .predict import predict_table
from .stage import outputs, run, run_table

__all__ = ["run", "run_table", "predict_table", "outputs"]
