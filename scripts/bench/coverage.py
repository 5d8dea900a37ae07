"""Coverage of the classification intervals at n = 15 and n = 60 (issue 23): the table in the README.

    PYTHONPATH=src python scripts/bench/coverage.py [--reps 400] [--boot 300]

Runs :mod:`cervirad.classification.coverage` with whatever ``cervirad`` is on PYTHONPATH; with an older
checkout (no coverage module) it loads this repository's ``coverage.py`` by path and runs the older
``classification.evaluate.bootstrap_metrics`` the same way (the 'before' column).
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

SIMULATION = Path(__file__).resolve().parents[2] / "src" / "cervirad" / "classification" / "coverage.py"


def _simulation_by_path():
    """This repository's coverage module, for a ``cervirad`` on PYTHONPATH that lacks it."""
    spec = importlib.util.spec_from_file_location("coverage_simulation", SIMULATION)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.DESIGNS, mod.TRUE_KEYS, mod.coverage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--boot", type=int, default=300)
    ap.add_argument("--mu", type=float, default=1.5)
    a = ap.parse_args()
    try:
        from cervirad.classification import metrics as ev

        intervals = ev.metric_intervals
    except ImportError:  # an older checkout: classification/evaluate.py and its bootstrap_metrics
        from cervirad.classification import evaluate as ev

        intervals = ev.bootstrap_metrics
    try:
        from cervirad.classification.coverage import DESIGNS, TRUE_KEYS, coverage
    except ImportError:  # an older checkout: this repository's simulation, loaded by path
        DESIGNS, TRUE_KEYS, coverage = _simulation_by_path()

    def fn(y, probs, ids, seed):
        return intervals(y, probs, ids, a.boot, seed)

    print(f"cervirad from {ev.__file__}; mu {a.mu}, {a.reps} draws, {a.boot} bootstrap resamples")
    print("n   " + "  ".join(f"{k:>18}" for k in TRUE_KEYS))
    for n, counts in DESIGNS.items():
        cov = coverage(fn, counts, a.mu, a.reps, keys=TRUE_KEYS)
        print(f"{n:<4}" + "  ".join(f"{100 * cov[k]:>17.1f}%" for k in TRUE_KEYS), flush=True)


if __name__ == "__main__":
    main()
