"""The robust-feature filter's evidence: the classify stage's part of feature robustness (``features.robustness``,
``classification.min_icc``); the filter step itself is :mod:`.robust_filter`.

* :func:`icc_for` - the ICC(1,1) of every feature column from ``features/robustness.csv`` (training
  patients only), the values :class:`~.robust_filter.RobustnessFilter` filters by.
* :func:`write` - after the models are fitted and scored, two artifacts in ``classification/``:

  - ``agreement.csv``: on the TEST patients with both tables, each image feature's ICC(1,1) and
    ICC(3,1) (95 % CI) between its manual-mask and its predicted-mask (CRFE) value: how far the
    deployed model's inputs are from the expert's.
  - ``robust_filter.json``: the threshold, the features each category kept, the manual-vs-predicted
    agreement summary and, with ``min_icc`` set, the best model's test metrics with the filter on and
    off on manual and predicted masks. Cheapest honest comparison: the chosen model and its tuned
    settings refitted twice on the same training rows, with and without the filter step (not
    re-tuned; calibrated as the run is), so the filter is the only difference.

  It returns the threshold and kept counts for ``metrics.json`` and ``model_card.json`` (``robust_filter``),
  which the stage writes.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..files import write_json
from ..io import read_table, write_table
from ..layout import AGREEMENT, ROBUST_FILTER
from .core import proba_full
from .data import Table
from .estimators import build_pipeline
from .metrics import point_metrics

log = logging.getLogger(__name__)
SHOWN = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")


def _robustness_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"classification.min_icc is set but '{path}' does not exist; run the features stage with "
                         "features.robustness.perturbations >= 2, or set classification.min_icc: null.")
    return read_table(path, "robustness table", id_columns=("feature",))


def icc_for(robustness: Path, features: list[str]) -> np.ndarray:
    """ICC(1,1) per feature column from the ``robustness`` table (NaN: not assessed, e.g. clinical variables)."""
    icc = _robustness_table(robustness).set_index("feature")["icc1"]
    return np.array([float(icc.get(f, np.nan)) for f in features])


def _unwrap(est):
    """The imbalanced-learn Pipeline inside a fitted search result (or a calibration wrapper)."""
    return getattr(est, "pipeline_", est)


def kept_by_category(features: list[str], icc: np.ndarray, min_icc: float | None, classes: dict[str, str]) -> dict:
    """Per category: columns in, kept, and not assessed (kept)."""
    out: dict[str, dict[str, int]] = {}
    for f, v in zip(features, icc):
        c = out.setdefault(classes.get(f, "clinical" if f.startswith("clin_") else "other"),
                           {"columns": 0, "kept": 0, "not_assessed": 0})
        c["columns"] += 1
        c["not_assessed"] += int(np.isnan(v))
        c["kept"] += int(np.isnan(v) or min_icc is None or v >= min_icc)
    return out


def agreement(manual: pd.DataFrame, predicted: pd.DataFrame, test_ids: list[str], rob: pd.DataFrame) -> pd.DataFrame:
    """ICC between manual- and predicted-mask values of every robustness.csv feature, on the test patients."""
    from ..features.perturbation import COLUMNS as ROB_COLUMNS, icc

    ids = [i for i in test_ids if i in set(manual["patient_id"].astype(str)) & set(predicted["patient_id"].astype(str))]
    feats = [f for f in rob["feature"] if f in manual.columns and f in predicted.columns]
    if not ids or not feats:
        return pd.DataFrame(columns=ROB_COLUMNS[:9] + ["n_patients"])
    m = manual.assign(patient_id=manual["patient_id"].astype(str)).set_index("patient_id").loc[ids, feats]
    p = predicted.assign(patient_id=predicted["patient_id"].astype(str)).set_index("patient_id").loc[ids, feats]
    X = np.stack([m.to_numpy(dtype=float), p.to_numpy(dtype=float)], axis=1)
    res = icc(X)
    meta = rob.set_index("feature").loc[feats]
    df = pd.DataFrame({"feature": feats, **{k: res[k] for k in ROB_COLUMNS[1:7]},
                       "feature_class": meta["feature_class"].to_numpy(), "image_type": meta["image_type"].to_numpy(),
                       "n_patients": res["n_complete"]})
    return df


def _summary(df: pd.DataFrame, column: str) -> dict:
    v = df[column].dropna()
    return {"n_features": int(len(df)), "median": float(v.median()) if len(v) else None,
            **{f"share_ge_{t}": float((v >= t).mean()) if len(v) else None for t in (0.75, 0.9)}}


def with_without(best: str, params: dict, fit: Table, test: Table, predicted: Table | None, ccfg, seed: int,
                 icc: np.ndarray) -> dict:
    """Test metrics of the chosen model refitted with and without the filter, on manual and predicted masks."""
    from .calibration import calibrate_search  # the run's classification.calibration, as fit_models applies it
    from .search import SearchResult

    out: dict[str, dict] = {}
    groups = fit.ids if fit.has_groups else None
    for name, cc in (("filter_on", ccfg), ("filter_off", replace(ccfg, min_icc=None))):
        from .harmonize import make_harmonizer  # classification.harmonize: the same ComBat step first

        pipe = build_pipeline(best, cc, seed, icc=icc, harmonizer=make_harmonizer(cc, fit.features))
        pipe = pipe.set_params(**params).fit(fit.X, fit.y)
        pipe = calibrate_search(SearchResult(params, 0.0, pipe), fit.X, fit.y, groups, cc, seed).best_estimator_
        C = len(fit.classes)
        rows = {"manual": test, **({"predicted": predicted} if predicted is not None else {})}
        out[name] = {"n_features_in": int(len(fit.features)),
                     "n_features_after_filter": int(pipe.named_steps["robust"].support_.sum())
                     if "robust" in pipe.named_steps else int(len(fit.features))}
        for masks, t in rows.items():
            m = point_metrics(t.y, proba_full(pipe, t.X, C))
            out[name][masks] = {k: (None if m.get(k) is None or np.isnan(m[k]) else round(float(m[k]), 4))
                                for k in SHOWN}
            out[name][masks]["n"] = int(len(t.y))
    return out


def write(out: Path, robustness: Path, manual_table: Path, predicted_table: Path | None, cfg, res, fit: Table,
          test: Table, predicted: Table | None, icc) -> tuple[dict, dict]:
    """``agreement.csv`` (with ``predicted``, the test rows of ``predicted_table``) and ``robust_filter.json`` into
    ``out``; returns the stage's info and the ``robust_filter`` key of metrics.json and model_card.json (empty
    without ``classification.min_icc``)."""
    cc = cfg.classification
    rob = _robustness_table(robustness)
    keys: dict = {}
    classes = dict(zip(rob["feature"], rob["feature_class"]))
    report: dict = {"min_icc": cc.min_icc, "icc": "ICC(1,1) over perturbed extractions of the training patients "
                    "(features/robustness.csv)"}
    if cc.min_icc is not None:
        kept = kept_by_category(fit.features, icc, cc.min_icc, classes)
        best = res.best_model
        pipe = _unwrap(res.searches[best].best_estimator_)
        report.update(n_features=len(fit.features), n_kept=sum(v["kept"] for v in kept.values()),
                      kept_by_category=kept,
                      selected_after_filter=int(pipe.named_steps["robust"].support_.sum()),
                      best_model=best,
                      comparison=with_without(best, res.searches[best].best_params_, fit, test, predicted, cc,
                                              cfg.run.seed, icc),
                      comparison_method="the chosen model and its tuned settings refitted on the same training rows "
                                        "with and without the filter step (not re-tuned); point metrics on the test "
                                        "patients")
        keys = {"robust_filter": {"min_icc": cc.min_icc, "n_features": report["n_features"],
                                  "n_kept": report["n_kept"], "kept_by_category": kept}}
    if predicted is not None:
        manual_df = read_table(manual_table, "feature table", id_columns=("patient_id",))
        pred_df = read_table(predicted_table, "predicted-mask feature table", id_columns=("patient_id",))
        agree = agreement(manual_df, pred_df, [str(i) for i in test.ids], rob)
        write_table(agree, out / AGREEMENT)
        report["agreement"] = {"n_patients": int(agree["n_patients"].max()) if len(agree) else 0,
                               "icc1": _summary(agree, "icc1"), "icc3": _summary(agree, "icc3"),
                               "by_class": {c: _summary(g, "icc1") for c, g in agree.groupby("feature_class")}}
    write_json(out / ROBUST_FILTER, report)
    if "comparison" in report:
        c = report["comparison"]
        log.info("classify: min_icc %.2f keeps %d of %d features; %s test macro AUC manual %s -> %s without the "
                 "filter", cc.min_icc, report["n_kept"], report["n_features"], report["best_model"],
                 c["filter_on"]["manual"]["auc_macro"], c["filter_off"]["manual"]["auc_macro"])
    return {k: report[k] for k in ("min_icc", "n_kept") if k in report}, keys
