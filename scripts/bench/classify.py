"""Benchmark: cervirad's grid search vs a naive scikit-learn baseline, and the default-config wall time.

Part 1 (ratio). A seeded synthetic table like the paper's cohort (114 patients x 868 features,
8 imbalanced classes), the paper's model grids (configs/paper.yaml) for all four models.
  * cervirad: ``search`` per model - one search over (k, model grid, selector) with the
    cleaning and ranking fitted once per fold/selector and forests fitted once at their
    largest tree count;
  * naive: a separate ``GridSearchCV`` per model and per k over (model grid, selector), plain
    pipeline without any cache, the best k then taken by CV score.
Both use the same folds and seeds; the script checks that they choose the same
hyperparameters for every model and prints both times and the ratio (goal <= 0.5).

Part 2 (a whole table run). ``run_table`` (repeated nested CV, four models, bootstrap CIs,
figures) on a synthetic 260-patient x 264-feature binary table: the wall time a user waits
(goal < 5 minutes on a 2-core machine). The paper's grids (the config defaults) are far
beyond that on 2 cores, so part 2 uses configs/table.yaml (the default of `classify --features`: same ranges, fewer points);
``--paper-grids`` times the defaults instead.

The paper's full grid takes long on 2 cores; ``--k-grid`` and ``--cv-folds`` shrink both sides
alike (the ratio is what is measured). Other processes on the machine inflate both times.

    .venv/bin/python scripts/bench/classify.py [--k-grid 10 30] [--cv-folds 3] [--skip-default] [--paper-grids]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # for tests.classification.synthetic (a test helper)


def part1(k_grid: list[int], cv_folds: int, n_jobs: int, models: list[str]) -> bool:
    from threadpoolctl import threadpool_limits

    from cervirad.classification.data import load_table
    from cervirad.classification.estimators import effective_k_grid
    from cervirad.classification.search import gridsearchcv_model, search
    from cervirad.config import load_config
    from tests.classification.synthetic import synthetic_table

    cfg = load_config(REPO / "configs" / "paper.yaml")
    cc = replace(cfg.classification, k_grid=tuple(k_grid), cv_folds=cv_folds, models=tuple(models))
    sizes = {0: 10, 1: 5, 2: 18, 3: 6, 4: 4, 5: 8, 6: 55, 7: 8}  # 114 patients, paper-like imbalance
    df = synthetic_table(sizes, n_features=868, informative=25, signal=0.8, seed=11)
    t = load_table(df.drop(columns="split"), "patient_id", "Pathologic_typing")
    print(f"part 1: {len(t.y)} patients x {t.X.shape[1]} features, {len(sizes)} classes {sizes}; "
          f"k grid {k_grid}, selectors {list(cc.selectors)}, {cv_folds}-fold CV, n_jobs {n_jobs}")
    total_fast = total_naive = 0.0
    same_all = True
    with threadpool_limits(1, user_api="blas"):
        for m in cc.models:
            grid = cc.grids[m]
            with tempfile.TemporaryDirectory() as cache:
                t0 = time.perf_counter()
                fast = search(m, t.X, t.y, None, cc, cfg.run.seed, n_jobs, cache)
                t_fast = time.perf_counter() - t0
            t0 = time.perf_counter()
            best = None
            for k in effective_k_grid(cc.k_grid, t.X.shape[1]):
                gs = gridsearchcv_model(m, t.X, t.y, None, cc, cfg.run.seed, n_jobs, None, k_grid=[k])
                if best is None or gs.best_score_ > best.best_score_:
                    best = gs
            t_naive = time.perf_counter() - t0
            same = (fast.best_params_ == best.best_params_ and abs(fast.best_score_ - best.best_score_) < 1e-12)
            same_all &= same
            total_fast += t_fast
            total_naive += t_naive
            print(f"  {m:8s} grid {grid}: cervirad {t_fast:7.1f} s, naive {t_naive:7.1f} s, ratio "
                  f"{t_fast / t_naive:.2f}; same choice: {same} ({_short(fast.best_params_)}, "
                  f"CV {fast.best_score_:.4f})")
    print(f"part 1 total: cervirad {total_fast:.1f} s, naive {total_naive:.1f} s, ratio "
          f"{total_fast / total_naive:.2f} (goal <= 0.50); same hyperparameters for all models: {same_all}")
    return same_all


LIGHT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "table.yaml"  # `classify --features` default


def part2(n_jobs: int, paper_grids: bool) -> float:
    from cervirad.pipeline import classify_table as run_table
    from cervirad.config import load_config
    from cervirad.io import write_table
    from tests.classification.synthetic import synthetic_table

    cfg = load_config(None if paper_grids else LIGHT_CONFIG, [f"execution.n_jobs={n_jobs}"])
    df = synthetic_table({0: 166, 1: 94}, n_features=264, informative=15, signal=0.5, seed=5, label="Target")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "table.csv"
        write_table(df.drop(columns="split"), path)
        t0 = time.perf_counter()
        s = run_table(cfg, path, "patient_id", "Target", Path(d) / "out")
        seconds = time.perf_counter() - t0
    h = s["headline"][s["best_model"]]
    print(f"part 2: {'paper' if paper_grids else 'light'} grids, 260 x 264 binary table, {cfg.classification.outer_folds}-fold nested CV x "
          f"{cfg.classification.repeats} repeat(s), 4 models, {cfg.classification.bootstrap} bootstraps, figures: "
          f"{seconds:.1f} s (goal < 300 s); best {s['best_model']} AUC {h['auc_macro']:.3f}")
    return seconds


def _short(params: dict) -> str:
    return ", ".join(f"{k.split('__', 1)[-1]}={v}" for k, v in params.items())


def main() -> int:
    from cervirad.classifiers import CLASSIFIERS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k-grid", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--cv-folds", type=int, default=3)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(CLASSIFIERS))
    ap.add_argument("--skip-default", action="store_true", help="skip part 2")
    ap.add_argument("--skip-ratio", action="store_true", help="skip part 1")
    ap.add_argument("--paper-grids", action="store_true", help="part 2 with the default (paper) grids")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ok = True
    if not a.skip_ratio:
        ok = part1(a.k_grid, a.cv_folds, a.n_jobs, a.models)
    if not a.skip_default:
        part2(a.n_jobs, a.paper_grids)
    return 0 if ok else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
