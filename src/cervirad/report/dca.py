"""Decision-curve analysis (Vickers & Elkin 2006) for one category, one-vs-rest.

Net benefit at threshold probability ``pt``::

    NB(pt) = TP(pt) / n - FP(pt) / n * pt / (1 - pt)

where a patient is "treated" (called positive) when its predicted probability of the
category is >= ``pt``. Reference strategies: treat all, ``NB = prev - (1 - prev) * pt / (1 - pt)``;
treat none, ``NB = 0``.
"""
from __future__ import annotations

import numpy as np


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


def decision_curve_figure(y: np.ndarray, prob: np.ndarray, label: str):
    """A matplotlib figure with the model, treat-all and treat-none curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    th = np.linspace(0.01, 0.8, 80)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(th, net_benefit(y, prob, th), label="model", lw=2)
    ax.plot(th, treat_all(y, th), label="treat all", ls="--")
    ax.axhline(0, color="k", lw=1, label="treat none")
    prev = float(np.mean(np.asarray(y).astype(bool)))
    ax.set_ylim(min(-0.05, -prev * 0.2), max(prev, 0.05) * 1.1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title(f"Decision curve: {label} (test patients, n={len(y)})")
    ax.legend(frameon=False)
    return fig
