"""Coverage simulation of the classification intervals (issue 23): known true values, repeated draws.

A synthetic classifier with a known truth: a patient of class c gets scores ``mu * e_c + N(0, I)`` over
the C classes and probabilities ``softmax(scores)``. The true accuracy, balanced accuracy, macro AUC and
Brier at the design's class mix are computed once on a large sample (:func:`truth`); each repetition
draws a test set with the design's class counts (a stratified test split, as ``splits.json`` makes),
computes the intervals and records whether each covers the truth (:func:`coverage`). Used by
``tests/classification/test_coverage.py`` (exact methods, a few seconds) and
``scripts/bench/coverage.py`` (also the bootstrap-based metrics, and the former method for comparison).
"""
from __future__ import annotations

import numpy as np

from cervirad.classification.metrics import point_metrics  # absolute: scripts/bench/coverage.py loads this file by path

DESIGNS = {15: (2, 3, 2, 6, 2), 60: (8, 12, 8, 24, 8)}  # the demo's test split and four times it
TRUE_KEYS = ("accuracy", "balanced_accuracy", "auc_macro", "brier")


def draw(counts: tuple[int, ...], mu: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of one sample with these class counts."""
    y = np.repeat(np.arange(len(counts)), counts)
    s = rng.normal(size=(len(y), len(counts)))
    s[np.arange(len(y)), y] += mu
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return y, e / e.sum(axis=1, keepdims=True)


def truth(counts: tuple[int, ...], mu: float, scale: int = 4000, seed: int = 12345) -> dict[str, float]:
    """The expected metrics at this class mix (one sample of ``scale`` x the counts; AUC is a U-statistic, so
    its expectation at fixed counts is the population AUC at this mix)."""
    y, P = draw(tuple(c * scale for c in counts), mu, np.random.default_rng(seed))
    m = point_metrics(y, P)
    return {k: m[k] for k in TRUE_KEYS}


def coverage(interval_fn, counts: tuple[int, ...], mu: float, reps: int, seed: int = 0,
             keys: tuple[str, ...] = TRUE_KEYS) -> dict[str, float]:
    """Share of ``reps`` draws whose interval (``interval_fn(y, [P], ids, seed) -> {metric: {ci_low, ci_high}}``)
    contains the true value, per metric of ``keys``."""
    true = truth(counts, mu)
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in keys}
    for r in range(reps):
        y, P = draw(counts, mu, rng)
        res = interval_fn(y, [P], np.arange(len(y)).astype(str), r)
        for k in keys:
            lo, hi = res[k]["ci_low"], res[k]["ci_high"]
            hits[k] += int(lo is not None and hi is not None and lo <= true[k] <= hi)
    return {k: hits[k] / reps for k in keys}
