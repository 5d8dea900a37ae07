"""The classify stage: a feature table in, ``classification/`` out (metrics, models, card, figures).

Two entry points:

* :func:`run` - the run directory's ``features/features.parquet``. The models are tuned and
  fitted on the ``train`` **and** ``val`` patients of ``splits.json`` (the validation part
  exists for segmentation early stopping; classification tunes by its own inner CV, so it
  uses those patients for fitting) and scored once on the ``test`` patients. When
  ``features/predicted/features.parquet`` exists (features from the segmentation's masks),
  the same fitted models are also scored on its test patients -> ``metrics_predicted.json``.
* :func:`run_table` - any table (id column, label column, numeric features): repeated
  nested cross-validation estimates performance, then the models are fitted on all rows.

Outputs in ``<dir>/classification/``: ``metrics.json`` (flat, SPEC §8: ``rf.accuracy`` ->
{value, ci_low, ci_high, n, n_boot_valid}, ``best_model``, ``best.*``, ``auc_macro_definition``,
``ci_method``, ``classes_absent_from_training``), ``summary.json`` (choices per model and
fold, class bookkeeping, notes), ``confusion_matrices.json``, ``predictions.csv``,
``model.joblib`` (best whole pipeline) + ``models/<name>.joblib``, each signed with this
installation's key (:mod:`cervirad.signing`; the HMACs sit in the card), ``model_card.json``
(also the raw training range of the selected features, for ``predict``'s row checks),
``figures/*.png``. A run's split also gets ``table1.csv`` (baseline characteristics per split and
class, :mod:`.table1`), ``targets.json`` + ``targets/<target>/`` (the binary sub-tasks of
``classification.targets``, :mod:`.targets`) and ``ablation.json`` (``classification.ablation``,
:mod:`.ablation`); every model's probabilities are calibrated per ``classification.calibration``
(:mod:`.calibration`; Brier, calibration intercept and slope in metrics.json).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .. import __version__
from ..batch import BATCH
from ..pathology import LABEL
from ..splits import load_splits, split_of
from ..config import Config
from ..errors import InputError
from ..io import read_table, write_table
from ..jsonutil import py_dict, py_value
from ..parallel import parallel_backend
from ..files import file_hash, read_json, write_json
from ..layout import (ABLATION, CLASSIFICATION, COLUMNS, CONFUSION, FIGURES, METRICS, METRICS_PREDICTED, MODEL_CARD,
                      MODEL_JOBLIB, MODELS, PREDICTIONS, PREDICTIONS_PREDICTED, SUMMARY, TABLE1, TARGETS,
                      TARGETS_SUMMARY)
from ..provenance import package_versions
from ..rundir import RunDir, StageContext
from ..signing import ALGORITHM as SIGNATURE_ALGORITHM, key_id, load_key, sign_file
from .ablation import importance_share
from .calibration import CALIBRATION_DEFINITION, METHOD_TEXT as CALIBRATION_METHODS, flat_calibration
from .core import Result, evaluate_holdout, nested_cv, proba_full
from .data import Table, feature_matrix, load_table, normalise_labels, table_hash
from .evaluate import (AUC_MACRO_DEFINITION, CI_METHODS, HEADLINE, bootstrap_metrics, ci_method, confusion, flatten,
                       nested_cv_intervals)
from .estimators import model_importance, scorer, selected_features, strip_cache, transform_to_selected
from .harmonize import BATCH_FEATURE, attach_batch, batch_codes

log = logging.getLogger(__name__)
SMALL_SAMPLE = 30
CAL_BOOT = 500  # resamples of the model-level calibration interval (each refits C x 2 logistic models)  # fewer evaluated patients than this: metrics.json and the log say so
ID = "patient_id"


# --------------------------------------------------------------------------- entry points
def run(cfg: Config, run: RunDir, cohort, st: StageContext) -> dict:
    """Stage ``classify``: the run's feature table on its patient split; returns the summary dict."""
    path = run.require(run.features_table("manual"), "run `cervirad extract-features` first")
    pred_path = run.features_table("predicted")
    pred_path = pred_path if pred_path.is_file() else None
    splits = load_splits(run.path)
    df = read_table(path, "feature table", id_columns=(ID,))
    exclude = _non_predictors(run.features_dir("manual") / COLUMNS, df)
    table = load_table(df, ID, LABEL, exclude, where=str(path))
    parts = _parts(table, df, split_of(splits), str(path))
    fitting = np.isin(parts, ("train", "val"))
    plain = table  # without the batch column: the counterpart of a harmonised run (harmonization.json)
    levels = _batch_levels(df, fitting, cfg, str(path))
    if levels is not None and cfg.classification.harmonize != "none":
        table = attach_batch(table, df[BATCH].to_numpy(), levels)
    fit, test = table.subset(fitting), table.subset(parts == "test")
    if len(test.y) == 0 or len(fit.y) == 0:
        raise InputError(f"Feature table '{path}' has {len(fit.y)} train/val and {len(test.y)} test patients of "
                         "splits.json; re-run `cervirad extract-features` for this run.")
    predicted = _predicted_test(pred_path, fit, splits, levels) if pred_path else None
    from . import robustness  # features.robustness / classification.min_icc

    icc = robustness.icc_for(run, fit.features) if cfg.classification.min_icc is not None else None
    with parallel_backend(cfg.execution), _cache(st.staging) as cache, threadpool_limits(1, user_api="blas"):
        res = evaluate_holdout(fit, test, cfg.classification, cfg.run.seed, cfg.execution.workers, cache, icc=icc)
    summary = write_outputs(st.classification_dir, res, fit, test, cfg, table_hash(df), {"split": "test"},
                            predicted=predicted, batch_levels=levels)
    _paper_results(st, cfg, df, splits, res, fit, test, predicted, table_hash(df), icc)
    if levels is not None:  # data.batch_column: the scanner effect, and the model with vs without ComBat
        from .harmonize_report import write_harmonization

        with parallel_backend(cfg.execution), _cache(st.staging) as cache, threadpool_limits(1, user_api="blas"):
            st.info.update(write_harmonization(st.classification_dir, res, plain, df[BATCH].to_numpy(), levels,
                                               fitting, parts == "test", cfg, cache, icc))
    if cfg.features.robustness.perturbations and run.robustness.is_file():
        st.info.update(robustness.write(st.classification_dir, run, cfg, res, fit, test, predicted, icc))
    st.info.update(best_model=summary["best_model"], evaluation="test_split")
    return summary


def run_table(cfg: Config, run: RunDir, cohort, st: StageContext, table: str | Path, id_column: str,
              label_column: str) -> dict:
    """Stage ``classify`` of a table run: any table by repeated nested CV -> ``classification/``."""
    table_path = Path(table)
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
    tab, dropped = _drop_tiny_classes(tab)
    from .harmonize import UnseenBatchError

    with parallel_backend(cfg.execution), _cache(st.staging) as cache, threadpool_limits(1, user_api="blas"):
        try:
            res = nested_cv(tab, cfg.classification, cfg.run.seed, cfg.execution.workers, cache)
        except UnseenBatchError:
            sizes = pd.Series(df[batch_col].astype(str)).value_counts()
            raise InputError(f"Feature table '{table_path}': an outer cross-validation fold holds every patient of a "
                             f"scanner (smallest: '{sizes.index[-1]}', {int(sizes.iloc[-1])} patient(s)), so ComBat "
                             "never saw it in training; pool small scanners in the batch column or set "
                             "classification.harmonize: none.") from None
    summary = write_outputs(st.classification_dir, res, tab, tab, cfg, table_hash(df),
                            {"table": str(table_path), "excluded_classes": dropped}, id_column=id_column,
                            label_column=label_column)
    st.info.update(best_model=summary["best_model"], evaluation="nested_cv")
    return summary


# --------------------------------------------------------------------------- inputs
def _non_predictors(columns_json: Path, df: pd.DataFrame) -> tuple[str, ...]:
    """``split`` and ``batch`` plus the columns the feature stage marked as not predictors (treatment variables)."""
    out = ["split", BATCH]
    if columns_json.is_file():
        info = read_json(columns_json)
        out += list(info.get("excluded_from_predictors", []))
        keep = info.get("predictors")
        if keep:
            out += [c for c in df.columns if c not in keep and c not in (ID, LABEL)]
    return tuple(dict.fromkeys(out))


def _parts(table: Table, df: pd.DataFrame, part_of: dict[str, str], where: str) -> np.ndarray:
    parts = np.array([part_of.get(i, "") for i in table.ids], dtype=object)
    unknown = table.ids[parts == ""]
    if len(unknown):
        log.warning("classify: %d patient(s) of the feature table are in no split of splits.json (e.g. '%s'); "
                    "left out", len(unknown), unknown[0])
    if "split" in df.columns:
        given = df["split"].astype(str).to_numpy()
        clash = (parts != "") & (given != parts)
        if clash.any():
            i = int(np.where(clash)[0][0])
            raise InputError(f"Feature table '{where}': patient '{table.ids[i]}' is '{given[i]}' in its split column "
                             f"but '{parts[i]}' in splits.json; re-run `cervirad extract-features` for this run.")
    return parts


def _batch_levels(df: pd.DataFrame, fitting: np.ndarray, cfg: Config, where: str) -> list[str] | None:
    """The batches (sorted) when the feature table carries ``data.batch_column``'s ``batch`` column;
    a harmonised run refuses a batch without a fitting patient (ComBat cannot learn it)."""
    if BATCH not in df.columns:
        if cfg.classification.harmonize != "none":
            raise InputError(f"classification.harmonize is '{cfg.classification.harmonize}' but feature table "
                             f"'{where}' has no '{BATCH}' column; set data.batch_column and re-run "
                             "`cervirad extract-features`.")
        return None
    labels = df[BATCH].astype(str).to_numpy()
    seen = set(labels[fitting])
    unseen = sorted(set(labels) - seen)
    if unseen and cfg.classification.harmonize != "none":
        n = int(np.isin(labels, unseen).sum())
        raise InputError(f"Batch(es) {unseen} of feature table '{where}' hold {n} test patient(s) but no train/val "
                         "patient: ComBat cannot learn a scanner it never saw; re-split so every scanner is in "
                         "training, or set classification.harmonize: none.")
    return sorted(set(labels))


def _predicted_test(path: Path, fit: Table, splits: dict, levels: list[str] | None = None) -> Table:
    """Test patients of the predicted-mask feature table, columns in the fitted order."""
    df = read_table(path, "predicted-mask feature table", id_columns=(ID,))
    if fit.features[-1] == BATCH_FEATURE:  # the batch code travels with the rows (classification.harmonize)
        df = df.assign(**{BATCH_FEATURE: batch_codes(df[BATCH], levels)})
    missing = [c for c in fit.features if c not in df.columns]
    if missing:
        raise InputError(f"Feature table '{path}' lacks {len(missing)} column(s) the models use (e.g. "
                         f"{', '.join(missing[:5])}); re-run `cervirad extract-features --masks predicted`.")
    df = df[df[ID].astype(str).isin(set(splits["test"]))]
    if df.empty:
        raise InputError(f"Feature table '{path}' holds no test patient of splits.json; "
                         "re-run `cervirad extract-features --masks predicted`.")
    X, notes = feature_matrix(df, fit.features, str(path))
    labels = normalise_labels(df[LABEL]).tolist()
    codes = {v: i for i, v in enumerate(fit.classes.tolist())}
    unknown = sorted({v for v in labels if v not in codes}, key=str)
    if unknown:
        raise InputError(f"Feature table '{path}' has label(s) {unknown} not in the manual-mask table; "
                         "both tables must come from the same cohort.")
    return Table(X, np.array([codes[v] for v in labels]), fit.classes, df[ID].astype(str).to_numpy(), fit.features,
                 str(path), notes)


def _drop_tiny_classes(table: Table) -> tuple[Table, list]:
    """Nested CV cannot train and test a class of one patient: such classes are left out (logged)."""
    patients = pd.Series(table.ids).groupby(table.y).nunique()
    tiny = [int(c) for c, n in patients.items() if n < 2]
    if not tiny:
        return table, []
    labels = [table.classes[c].item() if hasattr(table.classes[c], "item") else table.classes[c] for c in tiny]
    log.warning("classify: class(es) %s have a single patient; nested CV cannot both train and test them, so their "
                "rows are left out", labels)
    keep = ~np.isin(table.y, tiny)
    if len(np.unique(table.y[keep])) < 2:
        raise InputError(f"Feature table '{table.name}': after leaving out one-patient classes {labels} fewer than "
                         "two classes remain; add patients of the other classes.")
    classes, y = np.unique(table.classes[table.y[keep]], return_inverse=True)
    t = Table(table.X[keep], y, classes, table.ids[keep], table.features, table.name,
              table.notes + [f"one-patient class(es) {labels} left out"])
    return t, labels


class _cache:
    """A temporary folder for the pipeline and ranking caches, removed afterwards. It lies inside the
    stage's staging folder, so even a killed run leaves nothing in /tmp (the next run clears it)."""

    def __init__(self, base: str | Path | None = None):
        self.base = base

    def __enter__(self) -> str:
        self.path = tempfile.mkdtemp(prefix="cache-", dir=self.base)
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------- outputs
def write_outputs(out: Path, res: Result, fit: Table, ev: Table, cfg: Config, train_hash: str, extra: dict,
                  predicted: Table | None = None, id_column: str = ID, label_column: str = LABEL,
                  batch_levels: list[str] | None = None) -> dict:
    """Write every artifact of one evaluation into ``out``; returns the summary."""
    import joblib

    cc = cfg.classification
    out.mkdir(parents=True, exist_ok=True)
    classes = fit.classes
    labels = [str(c) for c in classes]
    known = np.isin(np.arange(len(classes)), fit.y)
    absent = [py_value(classes[c]) for c in range(len(classes)) if not known[c]]
    t0 = time.perf_counter()
    metrics = _metrics(res.y, res.probs, res.groups, res, cc, classes, known)
    mean_P = {m: np.mean(P, axis=0) for m, P in res.probs.items()}
    confusions = {m: confusion(res.y, P.argmax(axis=1), len(classes)) for m, P in mean_P.items()}
    best = res.best_model
    metrics["n_fit_patients"] = int(len(np.unique(fit.ids)))
    metrics["n_eval_patients"] = int(len(np.unique(res.groups)))
    metrics["n_classes_absent_from_training"] = len(absent)
    if metrics["n_eval_patients"] < SMALL_SAMPLE:
        note = (f"only {metrics['n_eval_patients']} evaluated patients: every metric is a small-sample estimate "
                "(read the confidence intervals, not the point values)")
        metrics["small_sample_warning"] = note
        log.warning("classify: %s", note)
    write_json(out / METRICS, metrics)
    write_json(out / CONFUSION,
               {m: {"labels": labels, "rows": "true", "columns": "predicted", "matrix": M.tolist()}
                for m, M in confusions.items()})
    _write_predictions(out / PREDICTIONS, res, mean_P, classes, known, best, id_column, label_column)

    (out / MODELS).mkdir(exist_ok=True)
    key = load_key(create=True)
    signatures = {}
    for m, gs in res.searches.items():
        joblib.dump(strip_cache(gs.best_estimator_), out / MODELS / f"{m}.joblib")
        signatures[f"{MODELS}/{m}.joblib"] = sign_file(out / MODELS / f"{m}.joblib", key)
    shutil.copyfile(out / MODELS / f"{best}.joblib", out / MODEL_JOBLIB)
    signatures[MODEL_JOBLIB] = sign_file(out / MODEL_JOBLIB, key)
    best_pipe = res.searches[best].best_estimator_

    summary = {
        "evaluation": res.mode, **extra, "best_model": best, "best_by": res.choice.get("rule"),
        "model_choice": res.choice.get("evidence"),
        "classes": [py_value(c) for c in classes], "classes_absent_from_training": absent,
        "class_counts_fit": {labels[c]: int(n) for c, n in enumerate(np.bincount(fit.y, minlength=len(classes)))},
        "class_counts_eval": {labels[c]: int(n) for c, n in enumerate(np.bincount(res.y, minlength=len(classes)))},
        "models": {m: {"inner_cv_score": float(gs.best_score_), "best_params": py_dict(gs.best_params_),
                       "seconds": res.seconds.get(m),
                       "n_selected": len(selected_features(gs.best_estimator_, fit.features)),
                       "smote": _smote_report(gs.best_estimator_, classes)}
                   for m, gs in res.searches.items()},
        "outer_folds": [{k: v for k, v in f.items() if k not in ("train_rows", "test_rows")} for f in res.folds],
        "notes": fit.notes, "headline": {m: {k: metrics[f"{m}.{k}"]["value"] for k in HEADLINE}
                                         for m in res.probs},
    }
    if predicted is not None:
        summary["predicted_masks"] = _write_predicted(out, res, predicted, ev, fit, cfg, classes, known, best,
                                                      id_column, label_column)
    importance, correlation = _importance(best_pipe, fit, ev, cc, cfg.run.seed)
    from .figures import write_figures

    figs = write_figures(out / FIGURES, res.y, mean_P, labels, known, metrics, best, confusions, importance,
                         correlation, cc.top_features)
    summary["figures"] = [str(p.relative_to(out)) for p in figs]
    summary["selected_features"] = selected_features(best_pipe, fit.features)
    summary["importance_share"] = importance_share(importance["names"], importance["perm_mean"], importance["model"],
                                                   tuple(cfg.features.sequences))
    _add_metrics(out, {f"importance_share.{src}.{k}": v for src, d in summary["importance_share"].items()
                       for k, v in d.items()})
    write_json(out / SUMMARY, summary)
    _write_card(out, best, res, fit, cfg, train_hash, id_column, label_column, absent, signatures, key_id(key),
                batch_levels)
    log.info("classify: best model %s (by inner CV): accuracy %.3f, macro AUC %s; outputs written in %.1f s",
             best, metrics[f"{best}.accuracy"]["value"], metrics[f"{best}.auc_macro"]["value"],
             time.perf_counter() - t0)
    return summary


def _smote_report(pipe, classes) -> dict | None:
    """The fitted SMOTE step's ``report_`` with its internal class codes replaced by the class labels."""
    rep = getattr(pipe.named_steps["smote"], "report_", None)
    if rep is None:
        return None

    def label(code):
        return py_value(classes[int(code)])

    counts = {key: {str(label(c)): n for c, n in rep[key].items()} for key in ("counts_before", "counts_after")}
    return {**rep, **counts, "singleton_classes": [label(c) for c in rep["singleton_classes"]]}


def _metrics(y, probs, groups, res: Result, cc, classes, known) -> dict:
    """Every model's metrics with intervals (:mod:`.evaluate`; nested CV: Nadeau-Bengio over the outer folds),
    calibration (:mod:`.calibration`) and ``best.*``: the final model's (hold-out) or, in nested CV, the
    whole procedure's with the model chosen inside each outer fold."""
    metrics: dict = {}
    support = np.bincount(y, minlength=len(classes))
    for i, (m, P) in enumerate(probs.items()):
        metrics.update(flatten(m, _intervals(y, P, groups, res, cc, 1000 + i), classes, support))
        metrics.update(flat_calibration(m, y, np.mean(P, axis=0), classes, known, min(cc.bootstrap, CAL_BOOT), 1000 + i,
                                        groups))
        if m in res.searches:
            metrics[f"{m}.inner_cv_score"] = round(float(res.searches[m].best_score_), 6)
    best = res.best_model
    metrics["best_model"] = best
    if res.choice:
        metrics["best_model_rule"] = res.choice["rule"]
    if res.selected:  # nested CV: the procedure (choice inside every outer fold), not the best of four scores
        sel = flatten("best", _intervals(y, res.selected, groups, res, cc, 999), classes, support)
        for k in HEADLINE:
            metrics[f"best.{k}"] = sel[f"best.{k}"]
        metrics["best_definition"] = ("nested CV of the whole procedure: inside every outer training part the four "
                                      "models are tuned and one is chosen by the final-model rule; best.* scores "
                                      "that choice on its outer fold (no winner's curse)")
        metrics["chosen_in_outer_folds"] = {m: sum(1 for f in res.folds if f["model"] == m and f.get("chosen_in_fold"))
                                            for m in probs}
    else:
        for k in HEADLINE:
            metrics[f"best.{k}"] = metrics[f"{best}.{k}"]
        metrics["best_definition"] = "the final model (chosen on the fitting patients' inner CV) on the test patients"
    metrics["auc_macro_definition"] = AUC_MACRO_DEFINITION
    metrics["ci_method"] = (ci_method(cc.bootstrap) if res.mode != "nested_cv" else
                            "95 % intervals: " + CI_METHODS["nadeau_bengio"])
    metrics["ci_methods"] = CI_METHODS
    metrics["calibration_method"] = getattr(cc, "calibration", "none")
    metrics["calibration_definition"] = CALIBRATION_DEFINITION
    # scored like any other class (zero probability), but the model cannot recognise them: flagged
    metrics["classes_absent_from_training"] = [py_value(classes[c]) for c in range(len(classes)) if not known[c]]
    return metrics


def _intervals(y, P: list, groups, res: Result, cc, seed: int) -> dict:
    """Point values and intervals of one model's (or the procedure's) probabilities, one matrix per repeat."""
    if res.mode == "nested_cv" and res.outer:
        return nested_cv_intervals(y, P, res.outer, bootstrap_metrics(y, P, groups, 0, seed))
    return bootstrap_metrics(y, P, groups, cc.bootstrap, seed)


def _write_predictions(path: Path, res: Result, mean_P: dict, classes, known, best, id_column, label_column) -> None:
    """One row per evaluated row: truth, the best model's class and probabilities, every model's class."""
    P = mean_P[best]
    df = pd.DataFrame({id_column: res.groups, label_column: classes[res.y], "predicted": classes[P.argmax(axis=1)]})
    for c in np.where(known)[0]:
        df[f"prob_{classes[c]}"] = P[:, c]
    for m, Pm in mean_P.items():
        df[f"predicted_{m}"] = classes[Pm.argmax(axis=1)]
    write_table(df, path)


FAILED_MASK_SCORING = ("scored from the training class prior: probability = each class's share of the fitting "
                       "patients, predicted class = the most frequent one; counted among the evaluated patients")


def prior_probs(fit_y: np.ndarray, n_classes: int, n_rows: int) -> np.ndarray:
    """The fitting patients' class shares as the probabilities of ``n_rows`` patients without features."""
    shares = np.bincount(fit_y, minlength=n_classes) / max(len(fit_y), 1)
    return np.tile(shares, (n_rows, 1))


def _write_predicted(out: Path, res: Result, pred: Table, ev: Table, fit: Table, cfg: Config, classes, known, best,
                     id_column, label_column) -> dict:
    """Score the fitted models on features from predicted masks: metrics_predicted.json + predictions. Every
    evaluated patient stays a row: one whose predicted mask gave no features (failed or empty mask) is scored
    from the prior (:data:`FAILED_MASK_SCORING`) and counted."""
    missing = ~np.isin(ev.ids, pred.ids)
    failed_ids, failed_y = ev.ids[missing], ev.y[missing]
    C = len(classes)
    prior = prior_probs(fit.y, C, int(missing.sum()))
    probs = {m: [np.vstack([proba_full(gs.best_estimator_, pred.X, C), prior])] for m, gs in res.searches.items()}
    y, ids = np.concatenate([pred.y, failed_y]), np.concatenate([pred.ids, failed_ids])
    sub = Result("predicted_masks", y, ids, probs, res.searches)
    metrics = _metrics(y, probs, ids, sub, cfg.classification, classes, known)
    metrics["n_eval_patients"] = int(len(np.unique(ids)))
    metrics["n_failed_masks"] = int(missing.sum())
    metrics["failed_mask_patients"] = [str(i) for i in failed_ids]
    metrics["failed_mask_scoring"] = FAILED_MASK_SCORING
    if missing.any():
        log.warning("classify: %d test patient(s) have no predicted-mask features (e.g. '%s'); %s",
                    int(missing.sum()), failed_ids[0], FAILED_MASK_SCORING)
    write_json(out / METRICS_PREDICTED, metrics)
    _write_predictions(out / PREDICTIONS_PREDICTED, sub, {m: P[0] for m, P in probs.items()}, classes, known,
                       best, id_column, label_column)
    return {m: {k: metrics[f"{m}.{k}"]["value"] for k in HEADLINE} for m in probs}


def _importance(pipe, fit: Table, ev: Table, cc, seed: int):
    """Best model: importance of its selected features (model + permutation on the evaluated rows) and
    the selected features of the fitting rows for the correlation map."""
    from sklearn.inspection import permutation_importance

    names = selected_features(pipe, fit.features)
    Xe = transform_to_selected(pipe, ev.X)
    # a calibration wrapper: the classifier step with its calibration (the reported labels)
    clf = pipe.final_estimator() if hasattr(pipe, "final_estimator") else pipe.named_steps["clf"]
    perm = permutation_importance(clf, Xe, ev.y, scoring=scorer(cc.scoring),
                                  n_repeats=cc.permutation_repeats, random_state=seed, n_jobs=1)
    importance = {"names": names, "model": model_importance(pipe), "perm_mean": perm.importances_mean,
                  "perm_sd": perm.importances_std}
    return importance, (transform_to_selected(pipe, fit.X), names)


def _training_ranges(fit: Table, names: list[str]) -> dict:
    """Per feature of ``names``: min, max, quartiles and IQR over the fitting rows (raw values, before
    imputation and scaling; missing values ignored) - ``predict`` flags values far outside them."""
    idx = {f: j for j, f in enumerate(fit.features)}
    out = {}
    for f in names:
        v = fit.X[:, idx[f]]
        v = v[np.isfinite(v)]
        if len(v) == 0:
            continue
        q1, q3 = np.percentile(v, [25, 75])
        out[f] = {"min": float(v.min()), "max": float(v.max()), "q1": float(q1), "q3": float(q3),
                  "iqr": float(q3 - q1)}
    return out


def _write_card(out: Path, best: str, res: Result, fit: Table, cfg: Config, train_hash: str, id_column: str,
                label_column: str, absent: list, signatures: dict[str, str], signer: str,
                batch_levels: list[str] | None = None) -> None:
    pipe = res.searches[best].best_estimator_
    selected_by_name = {m: selected_features(gs.best_estimator_, fit.features) for m, gs in res.searches.items()}
    used = list(dict.fromkeys(f for names in selected_by_name.values() for f in names))
    card = {
        "cervirad_version": __version__, "model": best, "model_file": MODEL_JOBLIB,
        "model_sha256": file_hash(out / MODEL_JOBLIB),
        "models": {m: f"{MODELS}/{m}.joblib" for m in res.searches},
        "model_sha256_by_name": {m: file_hash(out / MODELS / f"{m}.joblib") for m in res.searches},
        # HMAC-SHA256 of each pickle with this installation's key (cervirad.signing): predict loads
        # only pickles whose signature verifies, or any with --trust-model
        "signature_algorithm": SIGNATURE_ALGORITHM, "signing_key_id": signer, "signatures": signatures,
        "id_column": id_column, "label_column": label_column,
        "class_codes": [py_value(c) for c in fit.classes],
        "classes": [py_value(fit.classes[int(c)]) for c in pipe.classes_],
        "classes_absent_from_training": absent,
        "feature_columns": fit.features, "selected_features": selected_features(pipe, fit.features),
        "selected_features_by_name": selected_by_name,
        # raw training range of every feature some saved model selects (predict warns far outside it)
        "training_ranges": _training_ranges(fit, used),
        "training_table_sha256": train_hash, "training_rows": int(len(fit.y)),
        "training_class_counts": {str(py_value(c)): int(n) for c, n in
                                  zip(fit.classes, np.bincount(fit.y, minlength=len(fit.classes)))},
        # the ONE calibration of the saved probabilities; the report and `evaluate` read it from here
        "calibration": {"method": cfg.classification.calibration,
                        "description": CALIBRATION_METHODS[cfg.classification.calibration],
                        "metrics_definition": CALIBRATION_DEFINITION},
        "training_patients": int(len(np.unique(fit.ids))), "evaluation": res.mode,
        "cv_scores": {m: {"scoring": cfg.classification.scoring, "inner_cv_score": float(gs.best_score_),
                          "best_params": py_dict(gs.best_params_)} for m, gs in res.searches.items()},
        "config": cfg.to_dict()["classification"], "seed": cfg.run.seed, "packages": package_versions(),
    }
    if fit.features[-1] == BATCH_FEATURE:  # harmonised: predict maps each row's batch label to these codes
        card["batch_column"] = BATCH
        card["batch_levels"] = list(batch_levels) if batch_levels is not None else None
    write_json(out / MODEL_CARD, card)


# --------------------------------------------------------------------------- the paper's further results
def _add_metrics(out: Path, keys: dict) -> None:
    """Add keys to an already written ``metrics.json``."""
    m = read_json(out / METRICS)
    write_json(out / METRICS, {**m, **keys})


def _paper_results(st: StageContext, cfg: Config, df: pd.DataFrame, splits: dict, res: Result, fit: Table,
                   test: Table, predicted: Table | None, train_hash: str, icc=None) -> None:
    """Table 1, the binary sub-tasks (``classification.targets``) and the source ablation
    (``classification.ablation``) of a run's test split; each also summarised in metrics.json."""
    from .targets import sub_targets

    _write_table1(st.classification_dir, cfg, df, splits)
    subs = sub_targets(cfg.classification.targets)
    if subs:
        _run_targets(st, cfg, subs, fit, test, predicted, train_hash, icc)
    if cfg.classification.ablation:
        _run_ablation(st, cfg, res, fit, test, icc)


def _write_table1(out: Path, cfg: Config, df: pd.DataFrame, splits: dict) -> None:
    from .table1 import table1

    part_of = split_of(splits)
    rows = df[df[ID].astype(str).isin(part_of)]
    t1 = table1(rows, LABEL, rows[ID].astype(str).map(part_of), cfg.classification.bootstrap, cfg.run.seed)
    if not t1.empty:
        write_table(t1, out / TABLE1)
        groups = t1.groupby("group", sort=False)["n_group"].first().to_dict()
        _add_metrics(out, {"table1_file": TABLE1, "table1_groups": groups})


def _run_targets(st: StageContext, cfg: Config, subs: list[str], fit: Table, test: Table, predicted: Table | None,
                 train_hash: str, icc) -> None:
    """Each binary sub-task: a classify run on the same patients and columns -> ``targets/<target>/``."""
    from .targets import SHOWN, binary_table, check_both_classes, definition, side_by_side

    out = st.classification_dir
    metrics = {"pathologic_typing": read_json(out / METRICS)}
    n_test, positives = {"pathologic_typing": len(test.y)}, {}
    levels = read_json(out / MODEL_CARD).get("batch_levels")  # harmonised: the same
    for t in subs:
        f, e = binary_table(fit, t), binary_table(test, t)
        check_both_classes(f, t)
        p = binary_table(predicted, t) if predicted is not None else None
        with parallel_backend(cfg.execution), _cache(st.staging) as cache, threadpool_limits(1, user_api="blas"):
            r = evaluate_holdout(f, e, cfg.classification, cfg.run.seed, cfg.execution.workers, cache, icc=icc)
        write_outputs(out / TARGETS / t, r, f, e, cfg, train_hash,
                      {"split": "test", "target": t, "target_definition": definition(t)}, predicted=p,
                      batch_levels=levels)
        metrics[t] = read_json(out / TARGETS / t / METRICS)
        n_test[t], positives[t] = len(e.y), int(e.y.sum())
    table = side_by_side(metrics, n_test, positives)
    write_json(out / TARGETS_SUMMARY, {"rows": table, "folders": {t: f"{TARGETS}/{t}" for t in subs}})
    _add_metrics(out, {f"target.{r['target']}.{k}": r[k] for r in table if r["target"] in subs for k in SHOWN})


def _run_ablation(st: StageContext, cfg: Config, res: Result, fit: Table, test: Table, icc) -> None:
    from .ablation import DEFINITION, ablation

    best = res.best_model
    with parallel_backend(cfg.execution), _cache(st.staging) as cache, threadpool_limits(1, user_api="blas"):
        rows = ablation(fit, test, best, np.mean(res.probs[best], axis=0), cfg.classification, cfg.run.seed,
                        cfg.execution.workers, cache, tuple(cfg.features.sequences),
                        boot_seed=1000 + list(res.probs).index(best), icc=icc)
    write_json(st.classification_dir / ABLATION, {"definition": DEFINITION, "model": best, "rows": rows})
    _add_metrics(st.classification_dir, {f"ablation.{r['source']}.{k}": r[k] for r in rows
                                         for k in ("auc_macro", "accuracy") if k in r})


# --------------------------------------------------------------------------- for the report
def outputs(path: str | Path) -> dict:
    """What a finished classify stage left in ``<run>/classification`` (or that folder itself):
    ``{"dir", "metrics", "metrics_predicted", "summary", "figures": {name: path}, "predictions"}``;
    empty dict when the stage has not run."""
    p = Path(path)
    d = p if (p / METRICS).is_file() else p / CLASSIFICATION
    if not (d / METRICS).is_file():
        return {}

    def _load(name):
        f = d / name
        return read_json(f) if f.is_file() else None

    figs = {f.stem: f for f in sorted((d / FIGURES).glob("*.png"))}
    return {"dir": d, "metrics": _load(METRICS), "metrics_predicted": _load(METRICS_PREDICTED),
            "summary": _load(SUMMARY), "model_card": _load(MODEL_CARD), "figures": figs,
            "predictions": d / PREDICTIONS}
