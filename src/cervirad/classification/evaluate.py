"""Test metrics with patient-level bootstrap confidence intervals.

Inputs are integer class codes ``y`` (0..C-1) and a probability matrix ``P`` (n x C, one
column per code; a class the model never saw has probability 0). The prediction is
``argmax P``. From the confusion matrix ``M`` (rows true, columns predicted), over the
classes present in the truth or the predictions (as scikit-learn does):

* accuracy = trace(M) / n; balanced accuracy = mean recall over the true classes;
* precision_c = M_cc / column sum (0 when nothing is predicted as c), recall_c = M_cc / row sum,
  F1_c = 2 P R / (P + R); ``*_macro`` = plain mean, ``*_weighted`` = mean weighted by support;
* AUC_c = one-vs-rest ROC AUC = P(score of a random c-row > score of a random other row), ties
  1/2 (Mann-Whitney U / (n_pos n_neg)), for every class present in the evaluated labels (with
  both positives and negatives). ``auc_macro`` = the plain mean of these AUC_c
  (:data:`AUC_MACRO_DEFINITION`). The definition is the same in the hold-out evaluation and in
  nested CV: a class the model never saw in training is NOT left out - it is scored from its
  probability column, which is 0 for every row, so its AUC is 0.5 (all ties) and it pulls the
  macro AUC towards chance, as it should (the model cannot recognise that class). Such
  classes are listed in metrics.json (``classes_absent_from_training``) and in the report;
* Brier = mean over rows of sum_c (P_ic - [y_i = c])^2 (0 perfect, 2 worst).

Confidence intervals (:func:`ci_method`): percentile bootstrap (2.5 %, 97.5 %) over patients,
stratified by class - each resample draws, with replacement, as many patients of each class as
the evaluated set has (a patient's class is the label of its first row), so the class set and
the class counts are the same in every resample; the rows of one patient move together. A
metric undefined in a resample (e.g. an AUC when only one class is evaluated) is skipped for
that resample; each metric records ``n_boot_valid``, the number of resamples it was defined in
(no interval below ``max(10, n_boot / 10)``). Each metric also records ``n``, the patients it
rests on: all evaluated patients for the aggregate metrics, the patients of class c for the
``class_c.*`` metrics. A class of one patient gives a degenerate interval such as [1, 1] -
that is the interval of n = 1, not certainty, and the report shows n beside it.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ..jsonutil import jsonable

HEADLINE = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
AUC_MACRO_DEFINITION = (
    "mean of the one-vs-rest ROC AUCs over every class present in the evaluated labels (with both positives and "
    "negatives), the same in hold-out and nested-CV evaluation; a class the model never saw in training is scored "
    "from its zero probability (AUC 0.5, all ties) and is listed in classes_absent_from_training")


def ci_method(n_boot: int) -> str:
    """The interval method, as metrics.json states it."""
    return (f"percentile bootstrap (2.5 %, 97.5 %), stratified by class, {int(n_boot)} resamples over patients; "
            "per metric: n_boot_valid = resamples in which it was defined, n = patients it rests on (the class's "
            "patients for class_* metrics)")


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def auc_ovr(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` for ``positive`` rows vs the rest (NaN if one side is empty)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def point_metrics(y: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """All metrics of one prediction set; per-class keys are ``class_<code>.<metric>``.

    Every class present in ``y`` gets a one-vs-rest AUC from its column of ``P``, whether or not
    the model saw it in training (its column is then all zeros); ``auc_macro`` is their mean.
    """
    n, C = P.shape
    pred = np.argmax(P, axis=1)
    M = confusion(y, pred, C)
    support, predicted, tp = M.sum(axis=1), M.sum(axis=0), np.diag(M).astype(float)
    labels = (support > 0) | (predicted > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        rec = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0.0)
    w = support[labels] / max(support.sum(), 1)
    out = {
        "accuracy": tp.sum() / max(n, 1),
        "balanced_accuracy": float(rec[support > 0].mean()),
        "precision_macro": float(prec[labels].mean()), "recall_macro": float(rec[labels].mean()),
        "f1_macro": float(f1[labels].mean()),
        "precision_weighted": float((prec[labels] * w).sum()), "recall_weighted": float((rec[labels] * w).sum()),
        "f1_weighted": float((f1[labels] * w).sum()),
    }
    aucs = []
    for c in range(C):
        if support[c] == 0:
            continue
        a = auc_ovr(P[:, c], y == c)
        out[f"class_{c}.precision"], out[f"class_{c}.recall"], out[f"class_{c}.f1"] = prec[c], rec[c], f1[c]
        out[f"class_{c}.auc"] = a
        if np.isfinite(a):
            aucs.append(a)
    out["auc_macro"] = float(np.mean(aucs)) if aucs else float("nan")
    onehot = np.eye(C)[y]
    out["brier"] = float(((P - onehot) ** 2).sum(axis=1).mean())
    return {k: float(v) for k, v in out.items()}


def stratified_draws(y: np.ndarray, groups: np.ndarray, n_boot: int, seed: int):
    """Yield ``n_boot`` row-index arrays, each a bootstrap resample of patients stratified by class.

    A patient's class is the label of its first row; each draw takes, per class, as many of that
    class's patients as there are, with replacement, and keeps all rows of each drawn patient.
    """
    rng = np.random.default_rng(seed)
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    rows_of = [np.where(inv == g)[0] for g in range(len(uniq))]
    cls = np.asarray(y)[first]
    strata = [np.where(cls == c)[0] for c in np.unique(cls)]
    for _ in range(n_boot):
        pick = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
        yield np.concatenate([rows_of[g] for g in pick])


def bootstrap_metrics(y: np.ndarray, probs: list[np.ndarray], groups: np.ndarray, n_boot: int,
                      seed: int) -> dict[str, dict]:
    """``{metric: {value, ci_low, ci_high, n, n_boot_valid}}``; ``probs`` holds one P per repeat (values averaged).

    Each bootstrap draw (:func:`stratified_draws`) keeps every class's patient count and scores
    every repeat's predictions on that draw (the draw's metric is their mean). ``n``: evaluated
    patients (aggregate metrics) or the class's patients (``class_c.*``); ``n_boot_valid``: the
    resamples in which the metric was defined (0 without a bootstrap).
    """
    point = _mean_dicts([point_metrics(y, P) for P in probs])
    uniq, first = np.unique(groups, return_index=True)
    per_class = np.bincount(np.asarray(y)[first], minlength=probs[0].shape[1])

    def _n(k: str) -> int:
        return int(per_class[int(k[len("class_"):].split(".", 1)[0])]) if k.startswith("class_") else len(uniq)

    out = {k: {"value": v, "ci_low": float("nan"), "ci_high": float("nan"), "n": _n(k), "n_boot_valid": 0}
           for k, v in point.items()}
    if n_boot <= 0:
        return out
    samples: dict[str, list[float]] = {k: [] for k in point}
    for idx in stratified_draws(y, groups, n_boot, seed):
        draw = _mean_dicts([point_metrics(y[idx], P[idx]) for P in probs])
        for k in samples:
            samples[k].append(draw.get(k, float("nan")))
    for k, vals in samples.items():
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        out[k]["n_boot_valid"] = int(v.size)
        if v.size >= max(10, n_boot // 10):
            out[k]["ci_low"], out[k]["ci_high"] = (float(q) for q in np.percentile(v, [2.5, 97.5]))
    return out


def _mean_dicts(ds: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for d in ds for k in d))
    return {k: float(np.nanmean([d.get(k, np.nan) for d in ds])) if any(np.isfinite(d.get(k, np.nan)) for d in ds)
            else float("nan") for k in keys}


def flatten(model: str, boot: dict[str, dict], classes: np.ndarray, support: np.ndarray) -> dict:
    """Flat SPEC §8 keys: ``rf.accuracy``, ``rf.class_6.auc`` (class shown by its label), ``rf.class_6.support``."""
    out: dict = {}
    for k, v in boot.items():
        if k.startswith("class_"):
            code, metric = k[len("class_"):].split(".", 1)
            k = f"class_{classes[int(code)]}.{metric}"
        out[f"{model}.{k}"] = _clean(v)
    for c, n in enumerate(support):
        if n > 0:
            out[f"{model}.class_{classes[c]}.support"] = int(n)
    return out


def _clean(v: dict) -> dict:
    return jsonable({k: x if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else round(float(x), 6)
                     for k, x in v.items()})  # NaN -> None; counts stay integers


def calibration_points(y: np.ndarray, P: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label reliability: per confidence bin, mean confidence, accuracy and row count."""
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    cnt = np.bincount(b, minlength=bins)
    ok = cnt > 0
    mean_conf = np.bincount(b, conf, bins)[ok] / cnt[ok]
    acc = np.bincount(b, correct, bins)[ok] / cnt[ok]
    return mean_conf, acc, cnt[ok]
