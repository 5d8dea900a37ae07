"""Classification figures (PNG): ROC curves, confusion matrices, importance, correlation, comparison, calibration.

Each ``*_figure`` function takes arrays and returns a matplotlib figure; :func:`write_figures`
saves them all under a folder and returns their paths.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..classifiers import label as model_label
from ..layout import (CALIBRATION_PNG, CONFUSION_PNG, CORRELATION_PNG, IMPORTANCE_PNG, MODEL_COMPARISON_PNG,
                      ROC_PNG)
from ..plotting import pyplot, save_figure
from .metrics import HEADLINE, calibration_points


def roc_figure(y: np.ndarray, P: np.ndarray, labels: list[str], known: np.ndarray, title: str):
    """One-vs-rest ROC curve per class present in ``y`` (and known to the model), with its AUC."""
    from sklearn.metrics import roc_curve

    from .metrics import auc_ovr

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, name in enumerate(labels):
        pos = y == c
        if not known[c] or pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, P[:, c])
        ax.plot(fpr, tpr, lw=1.5, label=f"class {name} (AUC {auc_ovr(P[:, c], pos):.2f}, n={int(pos.sum())})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def confusion_figure(M: np.ndarray, labels: list[str], title: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(labels), 1.0 + 0.5 * len(labels)))
    ax.imshow(M, cmap="Blues")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, int(M[i, j]), ha="center", va="center",
                    color="white" if M[i, j] > M.max() / 2 else "black", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return fig


def importance_figure(names: list[str], model_imp: np.ndarray | None, perm_mean: np.ndarray, perm_sd: np.ndarray,
                      top: int, title: str):
    """Top-``top`` features by model importance (left, when the model has one) and permutation importance."""
    plt = pyplot()
    panels = [("permutation importance (drop in score)", perm_mean, perm_sd)]
    if model_imp is not None:
        panels.insert(0, ("model importance", model_imp, None))
    n = min(top, len(names))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 0.8 + 0.24 * n), squeeze=False)
    for ax, (label, values, err) in zip(axes[0], panels):
        order = np.argsort(-values, kind="stable")[:n][::-1]
        ax.barh(range(len(order)), values[order], xerr=None if err is None else err[order], color="tab:blue")
        ax.set_yticks(range(len(order)), [names[i] for i in order], fontsize=7)
        ax.set(xlabel=label, title=f"{title}: top {len(order)}")
    fig.tight_layout()
    return fig


def correlation_figure(X: np.ndarray, names: list[str], title: str):
    """Pearson correlation of the selected features, ordered by average-linkage clustering on 1 - |r|."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    plt = pyplot()
    R = np.nan_to_num(np.corrcoef(X, rowvar=False), nan=0.0) if X.shape[1] > 1 else np.ones((1, 1))
    n = R.shape[0]
    size = min(16, 3 + 0.18 * n)
    fig = plt.figure(figsize=(size + 1.5, size + 1.5))
    ax_d = fig.add_axes([0.2, 0.82, 0.62, 0.14])
    ax_h = fig.add_axes([0.2, 0.1, 0.62, 0.7])
    ax_c = fig.add_axes([0.84, 0.1, 0.02, 0.7])
    if n > 1:
        D = np.clip(1 - np.abs(R), 0, None)
        np.fill_diagonal(D, 0)
        Z = linkage(squareform((D + D.T) / 2, checks=False), method="average")
        order = dendrogram(Z, ax=ax_d, no_labels=True, color_threshold=0, above_threshold_color="k")["leaves"]
    else:
        order = [0]
    ax_d.axis("off")
    im = ax_h.imshow(R[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    fs = max(4, min(8, 300 / max(n, 1)))
    ax_h.set_xticks(range(n), [names[i] for i in order], rotation=90, fontsize=fs)
    ax_h.set_yticks(range(n), [names[i] for i in order], fontsize=fs)
    fig.colorbar(im, cax=ax_c, label="Pearson r")
    ax_d.set_title(title)
    return fig


def comparison_figure(metrics: dict, models: list[str], best: str):
    """Headline metrics per model with their bootstrap 95 % CIs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(HEADLINE), 4))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        vals, lo, hi = [], [], []
        for k in HEADLINE:
            d = metrics.get(f"{m}.{k}") or {}
            v = d.get("value")
            vals.append(np.nan if v is None else v)
            lo.append(0 if v is None or d.get("ci_low") is None else max(0.0, v - d["ci_low"]))
            hi.append(0 if v is None or d.get("ci_high") is None else max(0.0, d["ci_high"] - v))
        x = np.arange(len(HEADLINE)) + (i - (len(models) - 1) / 2) * width
        ax.bar(x, vals, width, yerr=[lo, hi], capsize=2,
               label=model_label(m) + (" (best by inner CV)" if m == best else ""))
    ax.set_xticks(range(len(HEADLINE)), [k.replace("_", " ") for k in HEADLINE], fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="score (95 % bootstrap CI)", title="Model comparison")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return fig


def calibration_figure(y: np.ndarray, probs: dict[str, np.ndarray]):
    """Top-label reliability (confidence of the predicted class vs its accuracy) and Brier score per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for m, P in probs.items():
        conf, acc, cnt = calibration_points(y, P)
        brier = float(((P - np.eye(P.shape[1])[y]) ** 2).sum(axis=1).mean())
        ax.plot(conf, acc, "o-", ms=3, label=f"{model_label(m)} (Brier {brier:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="predicted probability of the predicted class", ylabel="observed accuracy", xlim=(0, 1),
           ylim=(0, 1.02), title="Calibration")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def write_figures(folder: Path, y: np.ndarray, probs: dict[str, np.ndarray], labels: list[str],
                  known: np.ndarray, metrics: dict, best: str, confusions: dict[str, np.ndarray],
                  importance: dict | None, correlation: tuple[np.ndarray, list[str]] | None,
                  top: int, tag: str = "") -> list[Path]:
    """Save every figure into ``folder``; ``importance``/``correlation`` are for the best model."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for m, P in probs.items():
        out.append(save_figure(roc_figure(y, P, labels, known, f"ROC one-vs-rest: {model_label(m)}{tag}"),
                               folder / ROC_PNG.format(m)))
        out.append(save_figure(confusion_figure(confusions[m], labels, f"{model_label(m)}{tag}"),
                               folder / CONFUSION_PNG.format(m)))
    out.append(save_figure(comparison_figure(metrics, list(probs), best), folder / MODEL_COMPARISON_PNG))
    out.append(save_figure(calibration_figure(y, probs), folder / CALIBRATION_PNG))
    if importance is not None:
        out.append(save_figure(importance_figure(importance["names"], importance["model"], importance["perm_mean"],
                                                 importance["perm_sd"], top, model_label(best)),
                               folder / IMPORTANCE_PNG))
    if correlation is not None:
        out.append(save_figure(correlation_figure(*correlation, f"Selected features ({model_label(best)}): "
                                                  "Pearson r, hierarchical clustering"), folder / CORRELATION_PNG))
    return out
