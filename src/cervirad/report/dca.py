"""Decision-curve analysis (Vickers & Elkin 2006) for one category, one-vs-rest.

Net benefit at threshold probability ``pt``::

    NB(pt) = TP(pt) / n - FP(pt) / n * pt / (1 - pt)

where a patient is "treated" (called positive) when its predicted probability of the
category is >= ``pt``. Reference strategies: treat all, ``NB = prev - (1 - prev) * pt / (1 - pt)``;
treat none, ``NB = 0``.

The curve uses the probabilities the classify stage reports (``predictions.csv``: the final model's
probabilities after ``classification.calibration``), and carries a 95 % band: the 2.5 and 97.5
percentiles of the model's net benefit over bootstrap resamples of the test patients, stratified
by the category (positives and negatives each resampled with replacement, seeded).

:func:`dca_section` is the report's section: the curve for ``report.dca_category`` from the run's
``classification/predictions.csv``, drawn into ``report_files/``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..layout import DCA_PNG, PREDICTIONS, Layout
from ..pathology import CATEGORY_NAMES, LABEL
from ..plotting import pyplot, save_figure
from .markup import figures


def net_benefit(y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of the model at each threshold (``y`` binary, ``prob`` in [0, 1])."""
    y = np.asarray(y).astype(bool)
    prob = np.asarray(prob, dtype=float)
    n = len(y)
    out = np.empty(len(thresholds))
    for i, pt in enumerate(thresholds):
        called = prob >= pt
        tp = np.sum(called & y)
        fp = np.sum(called & ~y)
        out[i] = tp / n - fp / n * pt / (1 - pt)
    return out


def treat_all(y: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    prev = float(np.mean(np.asarray(y).astype(bool)))
    return prev - (1 - prev) * thresholds / (1 - thresholds)


def net_benefit_band(y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray, n_boot: int = 500,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2.5 / 97.5 percentiles of the net benefit over stratified bootstrap resamples of the patients."""
    y = np.asarray(y).astype(bool)
    prob = np.asarray(prob, dtype=float)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y), np.flatnonzero(~y)]
    curves = np.empty((n_boot, len(thresholds)))
    for b in range(n_boot):
        idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata if len(s)])
        curves[b] = net_benefit(y[idx], prob[idx], thresholds)
    lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
    return lo, hi


def decision_curve_figure(y: np.ndarray, prob: np.ndarray, label: str, n_boot: int = 500, seed: int = 0):
    """A matplotlib figure with the model (and its bootstrap 95 % band), treat-all and treat-none curves."""
    plt = pyplot()
    th = np.linspace(0.01, 0.8, 80)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(th, net_benefit(y, prob, th), label="model", lw=2)
    if n_boot > 0:
        lo, hi = net_benefit_band(y, prob, th, n_boot, seed)
        ax.fill_between(th, lo, hi, alpha=0.2, label=f"model, bootstrap 95 % band ({n_boot})")
    ax.plot(th, treat_all(y, th), label="treat all", ls="--")
    ax.axhline(0, color="k", lw=1, label="treat none")
    prev = float(np.mean(np.asarray(y).astype(bool)))
    ax.set_ylim(min(-0.05, -prev * 0.2), max(prev, 0.05) * 1.1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(f"Decision curve: {label} (test patients, n={len(y)})")
    ax.legend(frameon=False)
    return fig


def dca_section(run: Layout, category: int | None, out: Layout) -> tuple[str, bool]:
    """The section's HTML and whether it holds a curve (the checklist's clinical-utility item)."""
    if category is None:
        return "<p class='muted'>Decision-curve analysis disabled (report.dca_category is null).</p>", False
    p = run.classification_dir / PREDICTIONS
    if not p.is_file():
        return "<p class='muted'>No test predictions to analyse.</p>", False
    df = pd.read_csv(p)
    truth, prob = LABEL, f"prob_{category}"
    if truth not in df.columns or prob not in df.columns:
        return f"<p class='muted'>Predictions carry no probability column for category {category}.</p>", False
    y = (df[truth].astype(str) == str(category)).to_numpy()
    if y.sum() == 0:
        return f"<p class='muted'>No test patient of category {category}: no decision curve.</p>", False
    fig = decision_curve_figure(y, df[prob].to_numpy(), f"category {category} ({CATEGORY_NAMES.get(category, '')}) vs rest")
    return figures([save_figure(fig, out.report_files / DCA_PNG.format(category))]), True
