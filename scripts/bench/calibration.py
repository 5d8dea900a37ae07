"""Benchmark: which ``classification.calibration`` (none / prior / sigmoid / isotonic) to ship by default.

Data: radMLBench tables in ``../shared/data/radiomics_tabular/radmlbench_subset/*.csv.gz`` (columns ``ID``,
``Target`` binary, z-scored features). Config: the packaged ``table.yaml`` (the default of
``cervirad classify --features``), seed ``run.seed``, ``execution.workers`` jobs.

Per table, an outer stratified K-fold (``--outer-folds``, one repeat, seed ``run.seed + 1000`` like the
first repeat of ``nested_cv``). In each outer fold the four models are tuned ONCE on the training part,
uncalibrated (``fit_models`` with ``calibration: none``) - calibration never changes the tuning, which
always runs on the uncalibrated pipeline - and then each calibration mode is applied to the tuned
pipeline exactly as the classify stage does (:func:`cervirad.classification.calibration.calibrate_search`
on the same training rows); every mode scores the same held-out rows. So the modes differ only in the
calibration step.

Per table x mode x model, from the pooled out-of-fold probabilities: ROC AUC, Brier score (binary:
mean (p - y)^2 of the positive class, i.e. half the multi-class Brier of ``evaluate``), log-loss,
calibration intercept and slope (:func:`~cervirad.classification.calibration.calibration_metrics`),
and ``bacc``, the balanced accuracy of the reported class (arg-max of the calibrated probabilities:
calibration moves the decisions too, undoing part of what SMOTE did for the minority class).
The table printed is the mean over the models; the summary line the mean over tables and models.

``--minority-share S`` runs each table instead with only enough positives (seeded) that they are ``S``
of the rows (e.g. 0.15): the paper's cohort is strongly imbalanced (one category dominates), where
SMOTE shifts the prior most; radMLBench's tables are 25-55 % positive.

Usage::

    .venv/bin/python scripts/bench/calibration.py                         # 4 tables, 3 outer folds
    .venv/bin/python scripts/bench/calibration.py --tables Deng2023 WORC-Lipo --minority-share 0.15
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "radiomics_tabular" / "radmlbench_subset"
MODES = ("none", "prior", "sigmoid", "isotonic")
DEFAULT_TABLES = ("Deng2023", "WORC-Desmoid", "WORC-Lipo", "Hosny2018A")
METRICS = ("auc", "brier", "log_loss", "intercept", "slope", "bacc")


def scores(y: np.ndarray, P: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    from cervirad.classification.calibration import calibration_metrics

    p = np.clip(P[:, 1], 1e-15, 1 - 1e-15)
    cal = calibration_metrics(y, P)
    pred = P.argmax(axis=1)  # the reported class: arg-max of the (calibrated) probabilities
    bacc = float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))
    return {"auc": roc_auc_score(y, p), "brier": float(np.mean((p - y) ** 2)), "log_loss": log_loss(y, p),
            "intercept": cal["intercept"]["value"], "slope": cal["slope"]["value"], "bacc": bacc}


def imbalance(table, share: float, seed: int):
    """Keep every negative and a seeded subset of positives making up ``share`` of the rows."""
    rng = np.random.default_rng(seed)
    pos, neg = np.where(table.y == 1)[0], np.where(table.y == 0)[0]
    n_pos = min(len(pos), max(6, int(round(share * len(neg) / (1 - share)))))
    keep = np.zeros(len(table.y), dtype=bool)
    keep[neg] = True
    keep[rng.choice(pos, n_pos, replace=False)] = True
    return table.subset(keep)


def bench_table(path: Path, cfg, cache_root: str, share: float | None) -> dict:
    from threadpoolctl import threadpool_limits

    from cervirad.classification.calibration import calibrate_search
    from cervirad.classification.core import fit_models, proba_full
    from cervirad.classification.data import load_table
    from cervirad.classification.estimators import make_cv
    from cervirad.io import read_table
    from cervirad.parallel import parallel_backend

    table = load_table(read_table(path, "feature table"), "ID", "Target", where=str(path))
    if share:
        table = imbalance(table, share, cfg.run.seed)
    cc = replace(cfg.classification, calibration="none")
    models, n, C = list(cc.models), len(table.y), len(table.classes)
    P = {mode: {m: np.full((n, C), np.nan) for m in models} for mode in MODES}
    seconds = {mode: 0.0 for mode in MODES}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=cache_root) as cache, parallel_backend(cfg.execution), \
            threadpool_limits(1, user_api="blas"):
        for tr, te in make_cv(table.y, None, cc.outer_folds, cfg.run.seed + 1000):
            inner = table.subset(np.isin(np.arange(n), tr))
            searches, _ = fit_models(inner, cc, cfg.run.seed, cfg.execution.workers, cache)
            for mode in MODES:
                mc = replace(cc, calibration=mode)
                for m, gs in searches.items():
                    t1 = time.perf_counter()
                    est = calibrate_search(copy.copy(gs), inner.X, inner.y, None, mc, cfg.run.seed).best_estimator_
                    seconds[mode] += time.perf_counter() - t1
                    P[mode][m][te] = proba_full(est, table.X[te], C)
    res = {mode: {m: scores(table.y, P[mode][m]) for m in models} for mode in MODES}
    name = path.name.removesuffix(".csv.gz") + (f" (positives {share:.0%})" if share else "")
    return {"name": name, "n": n, "positives": int(table.y.sum()), "p": table.X.shape[1], "res": res,
            "calib_seconds": seconds, "seconds": time.perf_counter() - t0}


def mean_over(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def main() -> int:
    available = sorted(p.name.removesuffix(".csv.gz") for p in DATA.glob("*.csv.gz"))
    if not available:
        print(f"no radMLBench tables under {DATA}")
        return 2
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", nargs="+", default=[t for t in DEFAULT_TABLES if t in available], choices=available,
                    metavar="NAME",
                    help=f"tables (default {' '.join(DEFAULT_TABLES)}; available {' '.join(available)})")
    ap.add_argument("--outer-folds", type=int, default=3)
    ap.add_argument("--minority-share", type=float, default=None,
                    help="run each table with its positives subsampled to this share of the rows")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")

    from cervirad import presets
    from cervirad.config import load_config

    cfg = load_config(presets.packaged("table.yaml"))
    cfg = replace(cfg, classification=replace(cfg.classification, outer_folds=a.outer_folds))
    cc = cfg.classification
    print(f"config table.yaml: models {list(cc.models)}, k grid {list(cc.k_grid)}, selectors {list(cc.selectors)}, "
          f"inner {cc.cv_folds}-fold, outer {cc.outer_folds}-fold x 1, calibration folds {cc.calibration_folds}, "
          f"seed {cfg.run.seed}, n_jobs {cfg.execution.workers}")
    print("per table: mean over models of the pooled out-of-fold metrics (binary Brier = mean (p - y)^2)")
    t_all = time.perf_counter()
    results = []
    shares = [a.minority_share]
    with tempfile.TemporaryDirectory(prefix="calibration_") as cache_root:
        for name in a.tables:
            for share in shares:
                r = bench_table(DATA / f"{name}.csv.gz", cfg, cache_root, share)
                results.append(r)
                print(f"{r['name']}: {r['n']} rows ({r['positives']} positive) x {r['p']} features, "
                      f"{r['seconds']:.0f} s", flush=True)
                print(f"  {'mode':9s} " + " ".join(f"{k:>9s}" for k in METRICS) + "  calib s")
                for mode in MODES:
                    rows = list(r["res"][mode].values())
                    print(f"  {mode:9s} " + " ".join(f"{mean_over(rows, k):9.4f}" for k in METRICS)
                          + f"  {r['calib_seconds'][mode]:7.1f}", flush=True)
    print("over all tables and models:")
    summary = {}
    for mode in MODES:
        rows = [v for r in results for v in r["res"][mode].values()]
        summary[mode] = {k: mean_over(rows, k) for k in METRICS}
        print(f"  {mode:9s} " + " ".join(f"{k} {summary[mode][k]:.4f}" for k in METRICS))
    best = min(MODES, key=lambda m: (round(summary[m]["brier"], 4), round(summary[m]["log_loss"], 4)))
    wall = time.perf_counter() - t_all
    print(f"summary: {len(results)} table run(s), {wall / 60:.1f} min; mean Brier " +
          ", ".join(f"{m} {summary[m]['brier']:.4f}" for m in MODES) + "; mean log-loss " +
          ", ".join(f"{m} {summary[m]['log_loss']:.4f}" for m in MODES) + "; mean AUC " +
          ", ".join(f"{m} {summary[m]['auc']:.4f}" for m in MODES) + "; mean balanced accuracy " +
          ", ".join(f"{m} {summary[m]['bacc']:.4f}" for m in MODES) + "; AUC change vs none " +
          ", ".join(f"{m} {summary[m]['auc'] - summary['none']['auc']:+.4f}" for m in MODES[1:]) +
          f"; lowest Brier: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
