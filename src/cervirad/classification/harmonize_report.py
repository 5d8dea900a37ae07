"""The scanner effect of a run with ``data.batch_column``: ``classification/harmonization.json``.

Two parts, both on the run's own split (train + val fit, test scores):

* **Batch effect per selected feature**, before and after ComBat: the Kruskal-Wallis H test
  across batches and the share of variance explained by batch (eta squared = between-batch sum
  of squares / total sum of squares), on the fitting rows (ComBat fitted on them) and on the test
  rows (the frozen ComBat applied). Features: those the harmonised and the unharmonised model
  select. The class mix per batch is listed beside it: when it differs by scanner, part of a
  feature's "batch effect" is the class (confounding), and ComBat - which never sees the label -
  removes some class signal with it.
* **Metrics with and without harmonisation**: the run's final model and the same model's whole
  tuning procedure re-run with ``classification.harmonize`` flipped (combat <-> none), both scored
  on the same test patients; bootstrap CIs on the same resamples, and the paired bootstrap CI of
  each difference (with minus without).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats

from ..jsonutil import jsonable
from ..files import write_json
from ..layout import HARMONIZATION
from .core import evaluate_holdout
from .data import Table
from .estimators import selected_features
from .metrics import metric_intervals, patient_draws, point_metrics
from .harmonize import attach_batch

log = logging.getLogger(__name__)
SHOWN = ("auc_macro", "accuracy", "balanced_accuracy", "f1_macro")
ALPHA = 0.05


def batch_effect(values: np.ndarray, batch: np.ndarray) -> dict:
    """Kruskal-Wallis H and p across batches, and eta squared (share of variance explained by batch)."""
    ok = np.isfinite(values)
    v, b = values[ok], batch[ok]
    groups = [v[b == k] for k in np.unique(b)]
    groups = [g for g in groups if g.size]
    if len(groups) < 2 or np.ptp(v) == 0:
        return {"kw_h": None, "kw_p": None, "eta2": None}
    h, p = stats.kruskal(*groups)
    total = ((v - v.mean()) ** 2).sum()
    between = sum(g.size * (g.mean() - v.mean()) ** 2 for g in groups)
    return {"kw_h": float(h), "kw_p": float(p), "eta2": float(between / total) if total > 0 else None}


def feature_effects(names: list[str], features: list[str], X: np.ndarray, Xh: np.ndarray,
                    batch: np.ndarray) -> list[dict]:
    """Per feature of ``names``: the batch effect in ``X`` (raw) and in ``Xh`` (harmonised), same rows."""
    idx = {f: j for j, f in enumerate(features)}
    rows = []
    for f in names:
        j = idx[f]
        before, after = batch_effect(X[:, j], batch), batch_effect(Xh[:, j], batch)
        rows.append({"feature": f, **{f"{k}_before": v for k, v in before.items()},
                     **{f"{k}_after": v for k, v in after.items()}})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Median eta squared and the count of features with Kruskal-Wallis p < 0.05, before and after."""
    out = {"n_features": len(rows)}
    for when in ("before", "after"):
        eta = [r[f"eta2_{when}"] for r in rows if r[f"eta2_{when}"] is not None]
        out[f"eta2_median_{when}"] = float(np.median(eta)) if eta else None
        out[f"n_kw_p_below_{ALPHA}_{when}"] = sum(1 for r in rows if r[f"kw_p_{when}"] is not None
                                                   and r[f"kw_p_{when}"] < ALPHA)
    b, a = out["eta2_median_before"], out["eta2_median_after"]
    out["eta2_median_reduction"] = (1 - a / b) if a is not None and b else None
    return out


def paired_difference(y, P_with, P_without, groups, n_boot: int, seed: int) -> dict:
    """With minus without, per metric: the point difference and its paired percentile-bootstrap CI."""
    a, b = point_metrics(y, P_with), point_metrics(y, P_without)
    diffs: dict[str, list[float]] = {k: [] for k in SHOWN}
    for idx in patient_draws(groups, n_boot, seed):  # not stratified by class (issue 23)
        pa, pb = point_metrics(y[idx], P_with[idx]), point_metrics(y[idx], P_without[idx])
        for k in SHOWN:
            diffs[k].append(pa[k] - pb[k])
    out = {}
    for k in SHOWN:
        d = np.asarray(diffs[k], dtype=float)
        d = d[np.isfinite(d)]
        lo, hi = (np.percentile(d, [2.5, 97.5]) if d.size >= max(10, n_boot // 10) else (np.nan, np.nan))
        out[k] = {"value": float(a[k] - b[k]), "ci_low": float(lo), "ci_high": float(hi), "n_boot_valid": int(d.size)}
    return out


def write_harmonization(out: Path, res, plain: Table, labels: np.ndarray, levels: list[str], fitting: np.ndarray,
                        testing: np.ndarray, cfg, cache_dir: str | None, icc=None) -> dict:
    """``harmonization.json`` for a run whose feature table carries the batch; returns facts for run.json."""
    cc = cfg.classification
    best = res.best_model
    b_fit, b_test = labels[fitting].astype(str), labels[testing].astype(str)
    test_only = sorted(set(b_test) - set(b_fit))
    if test_only:  # only an unharmonised run gets here: ComBat cannot be fitted for them
        note = (f"batch(es) {test_only} have test patients but no train/val patient: ComBat cannot learn them, so "
                "there is no with/without comparison; re-split so every scanner is in training")
        log.warning("classify: %s", note)
        write_json(out / HARMONIZATION, {"run_harmonize": cc.harmonize, "note": note})
        return {"harmonization": {"note": note}}
    harmonised_run = cc.harmonize != "none"
    other = "none" if harmonised_run else "combat"
    batched = attach_batch(plain, labels, levels)
    fit_b, test_b = batched.subset(fitting), batched.subset(testing)
    fit_p, test_p = plain.subset(fitting), plain.subset(testing)
    icc_plain = None if icc is None else (np.asarray(icc)[:-1] if harmonised_run else np.asarray(icc))
    icc_other = None if icc is None else (icc_plain if harmonised_run else np.append(icc_plain, np.nan))
    f_other, t_other = (fit_p, test_p) if harmonised_run else (fit_b, test_b)
    log.info("classify: %s refitted with classification.harmonize: %s for the comparison", best, other)
    again = evaluate_holdout(f_other, t_other, replace(cc, models=(best,), harmonize=other),
                             cfg.run.seed, cfg.execution.workers, cache_dir, icc=icc_other)
    P_run, P_other = res.probs[best][0], again.probs[best][0]
    P_with, P_without = (P_run, P_other) if harmonised_run else (P_other, P_run)
    pipe_with = (res.searches[best] if harmonised_run else again.searches[best]).best_estimator_
    pipe_without = (again.searches[best] if harmonised_run else res.searches[best]).best_estimator_
    y, ids = test_b.y, test_b.ids
    boot_seed = 1000 + list(res.probs).index(best)
    metrics = {name: {k: v for k, v in metric_intervals(y, [P], ids, cc.bootstrap, boot_seed).items() if k in SHOWN}
               for name, P in (("with", P_with), ("without", P_without))}
    metrics["difference"] = paired_difference(y, P_with, P_without, ids, cc.bootstrap, boot_seed)

    combat = pipe_with.named_steps["harmonize"]
    names = list(dict.fromkeys(selected_features(pipe_with, batched.features)
                               + selected_features(pipe_without, plain.features)))
    effects = {}
    for part, t, b in (("fit", fit_b, b_fit), ("test", test_b, b_test)):
        Xh = combat.transform(t.X)
        rows = feature_effects(names, plain.features, t.X[:, :-1], Xh, b)
        image = [f for f, h in zip(plain.features, combat.harmonised_) if h]  # every harmonised column
        effects[part] = {"summary": summarise(rows), "features": rows,
                         "all_image_features": summarise(feature_effects(image, plain.features, t.X[:, :-1], Xh, b))}
    classes = [str(c) for c in plain.classes]
    mix = {str(lev): {classes[c]: int(((labels == lev) & (plain.y == c)).sum()) for c in range(len(classes))}
           for lev in levels}
    doc = {
        "run_harmonize": cc.harmonize, "prior": cc.harmonize_prior, "covariates": list(cc.harmonize_covariates),
        "model": best, "batches": {str(lev): {"fit": int((b_fit == lev).sum()), "test": int((b_test == lev).sum())}
                                   for lev in levels},
        "class_mix_by_batch": mix,
        "definition": ("batch effect per feature: Kruskal-Wallis H test across batches and eta squared (between-batch "
                       "/ total sum of squares); 'fit' = train+val rows (ComBat fitted on them), 'test' = test rows "
                       "(frozen ComBat); features = those selected by the harmonised and the unharmonised model "
                       "(all_image_features: every harmonised column). "
                       "Metrics: the run's final model with and without ComBat on the same test patients; "
                       "difference = with - without, paired stratified bootstrap over the same resamples"),
        "selected_by": {"with": selected_features(pipe_with, batched.features),
                        "without": selected_features(pipe_without, plain.features)},
        "batch_effect": effects, "metrics": metrics,
    }
    write_json(out / HARMONIZATION, jsonable(doc))
    s, a = effects["test"]["summary"], effects["fit"]["all_image_features"]
    log.info("classify: batch effect (median eta2, before -> after ComBat): %d image features on train+val %.3f -> "
             "%.3f, %d selected features on test %.3f -> %.3f; %s macro AUC with ComBat %.3f, without %.3f",
             a["n_features"], a["eta2_median_before"] or np.nan, a["eta2_median_after"] or np.nan, s["n_features"],
             s["eta2_median_before"] or np.nan, s["eta2_median_after"] or np.nan, best,
             metrics["with"]["auc_macro"]["value"], metrics["without"]["auc_macro"]["value"])
    return {"harmonization": {"eta2_median_test_before": s["eta2_median_before"],
                              "eta2_median_test_after": s["eta2_median_after"],
                              "auc_with": metrics["with"]["auc_macro"]["value"],
                              "auc_without": metrics["without"]["auc_macro"]["value"]}}
