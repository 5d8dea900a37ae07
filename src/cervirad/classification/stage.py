"""The classify stage: a feature table in, ``classification/`` out (metrics, models, card, figures).

Two entry points, each a thin translation of what the orchestrator passes into paths, then one flow:

* :func:`run` -> :func:`classify_split` - the run directory's ``features/features.parquet``. The models are
  tuned and fitted on the ``train`` **and** ``val`` patients of ``splits.json`` (the validation part
  exists for segmentation early stopping; classification tunes by its own inner CV, so it
  uses those patients for fitting) and scored once on the ``test`` patients. When
  ``features/predicted/features.parquet`` exists (features from the segmentation's masks),
  the same fitted models are also scored on its test patients -> ``metrics_predicted.json``.
* :func:`run_table` -> :func:`classify_table` - any table (id column, label column, numeric features):
  repeated nested cross-validation estimates performance, then the models are fitted on all rows.

Outputs in ``<dir>/classification/``: ``metrics.json`` (flat, SPEC §8: ``rf.accuracy`` ->
{value, ci_low, ci_high, n, n_boot_valid}, ``best_model``, ``best.*``, ``auc_macro_definition``,
``ci_method``, ``classes_absent_from_training``), ``summary.json`` (choices per model and
fold, class bookkeeping, notes), ``confusion_matrices.json``, ``predictions.csv``,
``model.joblib`` (best whole pipeline) + ``models/<name>.joblib``, each signed with this
installation's key (:mod:`cervirad.signing`; the HMACs sit in the card), ``model_card.json``
(also the raw training range of the selected features, for ``predict``'s row checks),
``figures/*.png`` (:mod:`.results`). A run's split also gets ``table1.csv`` (baseline characteristics per
split and class, :mod:`.table1`), ``targets.json`` + ``targets/<target>/`` (the binary sub-tasks of
``classification.targets``, :mod:`.targets`), ``ablation.json`` (``classification.ablation``,
:mod:`.ablation`), ``harmonization.json`` (a batch column, :mod:`.harmonize_report`) and ``robust_filter.json``
+ ``agreement.csv`` (``features.robustness``, :mod:`.robust_filter_report`); every model's probabilities are
calibrated per ``classification.calibration`` (:mod:`.calibration`; Brier, calibration intercept and slope in
metrics.json).

Each part returns its keys for ``metrics.json`` (and ``model_card.json``); the flow writes both once, at the
end (:func:`.results.write_final`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..batch import BATCH
from ..config.schema import Config
from ..errors import InputError
from ..io import read_table
from ..layout import COLUMNS, Layout
from ..pathology import LABEL
from ..rundir import StageContext
from ..splits import load_splits, split_of
from .core import evaluate_holdout, fitting, nested_cv
from .data import load_table, table_hash
from .harmonize import attach_batch
from .inputs import ID, batch_levels, drop_tiny_classes, non_predictors, split_parts
from .predicted import predicted_test
from .results import write_final, write_results

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- entry points
def run(cfg: Config, inputs: Layout, st: StageContext) -> dict:
    """Stage ``classify``: the run's feature table on its patient split (``inputs``: the stage's declared
    artifacts); returns the summary dict."""
    features = inputs.require(inputs.features_table("manual"), "run `cervirad extract-features` first")
    predicted = inputs.features_table("predicted")
    return classify_split(cfg, features, inputs.features_dir("manual") / COLUMNS,
                          predicted if predicted.is_file() else None, load_splits(inputs.path), inputs.robustness,
                          st.classification_dir, st.staging, st.info)


def run_table(cfg: Config, inputs: Layout, st: StageContext, table: str | Path, id_column: str,
              label_column: str) -> dict:
    """Stage ``classify`` of a table run: any table by repeated nested CV -> ``classification/``."""
    return classify_table(cfg, Path(table), id_column, label_column, st.classification_dir, st.staging, st.info)


# --------------------------------------------------------------------------- the flows
def classify_split(cfg: Config, features: Path, columns: Path, predicted_path: Path | None, splits: dict,
                   robustness: Path, out: Path, staging: Path, info: dict) -> dict:
    """Fit on the ``features`` table's train + val patients of ``splits``, score on its test patients, and write
    every artifact into ``out``; ``columns``: the feature stage's ``columns.json``, ``predicted_path``: the
    predicted-mask feature table (or None), ``robustness``: ``features/robustness.csv``. Facts for the stage
    record go into ``info``; returns the summary."""
    from . import robust_filter_report  # features.robustness / classification.min_icc
    from .ablation import write_ablation
    from .table1 import write_table1
    from .targets import sub_targets, write_targets

    df = read_table(features, "feature table", id_columns=(ID,))
    table = load_table(df, ID, LABEL, non_predictors(columns, df), where=str(features))
    parts = split_parts(table, df, split_of(splits), str(features))
    fitting_rows = np.isin(parts, ("train", "val"))
    plain = table  # without the batch column: the counterpart of a harmonised run (harmonization.json)
    levels = batch_levels(df, fitting_rows, cfg, str(features))
    if levels is not None and cfg.classification.harmonize != "none":
        table = attach_batch(table, df[BATCH].to_numpy(), levels)
    fit, test = table.subset(fitting_rows), table.subset(parts == "test")
    if len(test.y) == 0 or len(fit.y) == 0:
        raise InputError(f"Feature table '{features}' has {len(fit.y)} train/val and {len(test.y)} test patients of "
                         "splits.json; re-run `cervirad extract-features` for this run.")
    predicted = predicted_test(predicted_path, fit, splits, levels) if predicted_path else None
    icc = robust_filter_report.icc_for(robustness, fit.features) if cfg.classification.min_icc is not None else None
    with fitting(cfg.execution, staging) as cache:
        res = evaluate_holdout(fit, test, cfg.classification, cfg.run.seed, cfg.execution.workers, cache, icc=icc)
    train_hash = table_hash(df)
    results = write_results(out, res, fit, test, cfg, train_hash, {"split": "test"}, predicted=predicted,
                            batch_levels=levels)
    results.metrics.update(write_table1(out, cfg, df, splits))
    subs = sub_targets(cfg.classification.targets)
    if subs:
        results.metrics.update(write_targets(out, staging, cfg, subs, fit, test, predicted, train_hash, icc,
                                             results.metrics, results.card.get("batch_levels")))
    if cfg.classification.ablation:
        results.metrics.update(write_ablation(out, staging, cfg, res, fit, test, icc))
    if levels is not None:  # data.batch_column: the scanner effect, and the model with vs without ComBat
        from .harmonize_report import write_harmonization

        with fitting(cfg.execution, staging) as cache:
            info.update(write_harmonization(out, res, plain, df[BATCH].to_numpy(), levels, fitting_rows,
                                            parts == "test", cfg, cache, icc))
    if cfg.features.robustness.perturbations and robustness.is_file():
        facts, keys = robust_filter_report.write(out, robustness, features, predicted_path, cfg, res, fit, test,
                                                 predicted, icc)
        info.update(facts)
        results.metrics.update(keys)
        results.card.update(keys)
    write_final(out, results)
    info.update(best_model=results.summary["best_model"], evaluation="test_split")
    return results.summary


def classify_table(cfg: Config, table_path: Path, id_column: str, label_column: str, out: Path, staging: Path,
                   info: dict) -> dict:
    """Any table by repeated nested CV (then the models fitted on all rows) -> every artifact in ``out``; facts for
    the stage record go into ``info``; returns the summary."""
    if cfg.classification.min_icc is not None:
        raise InputError(f"classification.min_icc is set but a table run ('{table_path}') has no perturbation ICCs "
                         "(features/robustness.csv); set classification.min_icc: null for `classify --features`.")
    if len(cfg.classification.targets) > 1 or cfg.classification.ablation:
        log.warning("classify: classification.targets and .ablation apply to a run's test split; a table run "
                    "('%s') evaluates its label column only", table_path)
    df = read_table(table_path, "feature table", id_columns=(id_column,))
    harmonize = cfg.classification.harmonize != "none"
    batch_col = cfg.data.batch_column
    if harmonize and batch_col not in df.columns:
        raise InputError(f"classification.harmonize is '{cfg.classification.harmonize}' but feature table "
                         f"'{table_path}' has no batch column '{batch_col}' (data.batch_column); add the scanner/site "
                         "column or set classification.harmonize: none.")
    tab = load_table(df, id_column, label_column, (batch_col,) if harmonize else (), where=str(table_path))
    if harmonize:
        labels = df[batch_col].astype(str).to_numpy()
        tab = attach_batch(tab, labels, sorted(set(labels)))
    tab, dropped = drop_tiny_classes(tab)
    from .harmonize import UnseenBatchError

    with fitting(cfg.execution, staging) as cache:
        try:
            res = nested_cv(tab, cfg.classification, cfg.run.seed, cfg.execution.workers, cache)
        except UnseenBatchError:
            sizes = pd.Series(df[batch_col].astype(str)).value_counts()
            raise InputError(f"Feature table '{table_path}': an outer cross-validation fold holds every patient of a "
                             f"scanner (smallest: '{sizes.index[-1]}', {int(sizes.iloc[-1])} patient(s)), so ComBat "
                             "never saw it in training; pool small scanners in the batch column or set "
                             "classification.harmonize: none.") from None
    results = write_results(out, res, tab, tab, cfg, table_hash(df),
                            {"table": str(table_path), "excluded_classes": dropped}, id_column=id_column,
                            label_column=label_column)
    write_final(out, results)
    info.update(best_model=results.summary["best_model"], evaluation="nested_cv")
    return results.summary
