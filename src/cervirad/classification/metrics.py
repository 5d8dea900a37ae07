"""Test metrics with patient-level confidence intervals, the method chosen per metric.

Inputs are integer class codes ``y`` (0..C-1) and a probability matrix ``P`` (n x C, one
column per code; a class the model never saw has probability 0). The prediction is
``argmax P``. From the confusion matrix ``M`` (rows true, columns predicted), over the
classes present in the truth or the predictions (as scikit-learn does):

* accuracy = trace(M) / n; balanced accuracy = mean recall over the true classes;
* precision_c = M_cc / column sum (0 when nothing is predicted as c), recall_c = M_cc / row sum,
  F1_c = 2 P R / (P + R); ``*_macro`` = plain mean, ``*_weighted`` = mean weighted by support;
* AUC_c = one-vs-rest ROC AUC = P(score of a random c-row > score of a random other row), ties
  1/2 (Mann-Whitney U / (n_pos n_neg)), for every class present in the evaluated labels (with
  both positives and negatives; :func:`auc_ovr` is the one place that decides when an AUC is
  undefined). ``auc_macro`` = the plain mean of these AUC_c (:data:`AUC_MACRO_DEFINITION`). The
  definition is the same in the hold-out evaluation and in nested CV: a class the model never saw
  in training is NOT left out - it is scored from its probability column, which is 0 for every
  row, so its AUC is 0.5 (all ties) and it pulls the macro AUC towards chance, as it should (the
  model cannot recognise that class). Such classes are listed in metrics.json
  (``classes_absent_from_training``) and in the report;
* Brier = mean over rows of sum_c (P_ic - [y_i = c])^2 (0 perfect, 2 worst).

Confidence intervals (95 %), one method per metric, named in each metric's ``ci_method``
(:data:`CI_METHODS`; :func:`ci_method` states the set). None of them fixes the class counts: a
class of one patient carries the uncertainty of n = 1, not zero width (the former class-stratified
bootstrap drew that one patient every time, so 10 external patients gave accuracy 0.9 [0.9, 0.9]).

* ``accuracy``: Wilson score interval of the proportion of correctly classified patients.
* ``balanced_accuracy``: each true class's recall gets its Jeffreys posterior Beta(x + 1/2,
  n_c - x + 1/2) (x correct of that class's n_c patients); the interval is the 2.5 / 97.5 %
  quantiles of the mean over classes (Monte Carlo, :data:`MC_DRAWS` seeded draws). With one
  patient in a class its recall spans almost [0, 1], as it should.
* ``auc_macro``: DeLong's structural components of every one-vs-rest AUC, combined into each
  patient's influence on the macro mean; variance = n / (n - 1) x the sum of squared influences
  over patients (class counts not fixed), on the logit scale, Student t with n - 1 degrees of
  freedom. ``class_c.auc``: DeLong's variance of that AUC, logit scale, t with n - 1 df. A zero
  DeLong variance (perfect separation) is replaced by the Hanley-McNeil variance at the AUC moved
  half a pair towards 0.5, so an AUC of 1 on few patients keeps a width.
* ``class_c.recall`` / ``class_c.precision``: Wilson intervals on the class's patients / on the
  patients predicted as c.
* ``brier``: Student t interval of the mean of the patients' Brier contributions.
* every other metric (F1, macro precision and recall, weighted means): percentile bootstrap over
  patients, resampled WITHOUT stratification (a resample's class counts vary as a new sample's
  would); resamples where the metric is undefined are skipped and counted in ``n_boot_valid``.

A per-class metric resting on fewer than :data:`MIN_CLASS_N` patients of that class gets no
interval: ``ci_low`` / ``ci_high`` are null and ``n_too_small`` is true (the report shows "n too
small"). Each metric records ``n``: all evaluated patients for the aggregate metrics, the patients
of class c for the ``class_c.*`` metrics. Rows of one patient move together (the interval counts
patients, not rows). Nested cross-validation uses other intervals, which include the refitting
(:func:`nested_cv_intervals`). Coverage of these methods at n = 15 and 60:
``tests/classification/test_coverage.py`` and ``scripts/bench/coverage.py``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats
from scipy.special import expit
from scipy.stats import rankdata

from ..jsonutil import jsonable

HEADLINE = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
AUC_MACRO_DEFINITION = (
    "mean of the one-vs-rest ROC AUCs over every class present in the evaluated labels (with both positives and "
    "negatives), the same in hold-out and nested-CV evaluation; a class the model never saw in training is scored "
    "from its zero probability (AUC 0.5, all ties) and is listed in classes_absent_from_training")
MIN_CLASS_N = 5  # per-class intervals need at least this many patients of the class
MC_DRAWS = 4000
LEVEL = 0.95
CI_METHODS = {
    "wilson": "Wilson score interval (patients)",
    "jeffreys_mean": "Jeffreys posterior of each class's recall, 2.5/97.5 % quantiles of their mean (Monte Carlo)",
    "delong_macro": "DeLong structural components combined for the macro mean, variance over patients (class "
                    "counts not fixed), logit scale, t(n-1)",
    "delong": "DeLong variance, logit scale, t(n-1)",
    "t_mean": "Student t interval of the mean over patients",
    "bootstrap": "percentile bootstrap over patients, not stratified (class counts vary between resamples)",
    "nadeau_bengio": "Nadeau-Bengio corrected resampled t over the outer folds (variance of the fold-level metric x "
                     "(1/J + n_test/n_train)), around the pooled out-of-fold value",
    "n_too_small": f"no interval: fewer than {MIN_CLASS_N} patients of the class",
}


def ci_method(n_boot: int) -> str:
    """The interval methods, as metrics.json states them (each metric names its own in ``ci_method``)."""
    return (f"95 % intervals over patients, chosen per metric (each metric's ci_method): accuracy Wilson; balanced "
            f"accuracy Jeffreys posterior mean of the class recalls; macro and per-class AUC DeLong (logit, t); "
            f"per-class recall / precision Wilson; Brier t; other metrics a percentile bootstrap of {int(n_boot)} "
            f"resamples over patients, not stratified by class; no per-class interval below {MIN_CLASS_N} patients "
            "of the class (n_too_small). n = patients the metric rests on")


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


# --------------------------------------------------------------------------- interval methods
@lru_cache(maxsize=None)
def _z() -> float:
    return float(stats.norm.ppf(0.5 + LEVEL / 2))


@lru_cache(maxsize=None)
def _t(df: int) -> float:
    """Two-sided Student t quantile at LEVEL with ``df`` degrees of freedom (at least 1)."""
    return float(stats.t.ppf(0.5 + LEVEL / 2, max(int(df), 1)))


def wilson(x: float, n: float) -> tuple[float, float]:
    """Wilson score interval of ``x`` successes in ``n`` trials (NaN for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    z = _z()
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def jeffreys_mean(successes: np.ndarray, totals: np.ndarray, seed: int) -> tuple[float, float]:
    """2.5 / 97.5 % quantiles of the mean of independent Jeffreys posteriors Beta(x + 1/2, n - x + 1/2)."""
    rng = np.random.default_rng(seed)
    draws = rng.beta(successes[:, None] + 0.5, totals[:, None] - successes[:, None] + 0.5,
                     size=(len(totals), MC_DRAWS)).mean(axis=0)
    lo, hi = np.percentile(draws, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def _components(s: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray]:
    """AUC and DeLong's structural components: V10 for each positive, V01 for each negative (row order)."""
    pos, neg = s[positive], s[~positive]
    cmp = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v = np.empty(len(s))
    v[positive] = cmp.mean(axis=1)
    v[~positive] = cmp.mean(axis=0)
    return float(cmp.mean()), v


def _hanley_mcneil(a: float, m: int, n: int) -> float:
    """Hanley-McNeil variance of an AUC ``a`` with m positives and n negatives."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n)


def _logit_t(a: float, var: float, df: int) -> tuple[float, float]:
    """Interval of an AUC ``a`` with variance ``var`` on the logit scale, Student t with ``df``."""
    a_c = float(np.clip(a, 1e-4, 1 - 1e-4))
    se = np.sqrt(var) / (a_c * (1 - a_c))
    t = _t(df)
    lg = np.log(a_c / (1 - a_c))
    return float(expit(lg - t * se)), float(expit(lg + t * se))


def _auc_floor(a: float, m: int, n: int) -> float:
    """Variance used when DeLong's is zero: Hanley-McNeil at the AUC moved half a pair towards 0.5."""
    a_s = float(np.clip(a - 0.5 * np.sign(a - 0.5) / (m * n), 1e-6, 1 - 1e-6))
    return max(_hanley_mcneil(a_s, m, n), 1e-12)


def _patient_sum(v: np.ndarray, inv: np.ndarray, n_pat: int) -> np.ndarray:
    return np.bincount(inv, weights=v, minlength=n_pat)


def auc_intervals(y: np.ndarray, P: np.ndarray, inv: np.ndarray, n_pat: int) -> dict[str, tuple[float, float]]:
    """DeLong intervals of every one-vs-rest AUC (``class_c.auc``) and of their mean (``auc_macro``).

    Per class: DeLong's variance S10/m + S01/n (sample variances of the structural components of the m
    positive and n negative patients). Macro mean: (1/C^2) sum over class pairs of the covariances - each
    class's own DeLong variance on the diagonal, off the diagonal the cross-products of the patients'
    influences on the two AUCs (n/(n-1) x sum over patients; a patient is a positive of one class and a
    negative of the others)."""
    C = P.shape[1]
    out: dict[str, tuple[float, float]] = {}
    phis, variances, aucs = [], [], []
    for c in range(C):
        positive = y == c
        m, n = int(positive.sum()), int((~positive).sum())
        if m == 0 or n == 0:
            continue
        a, v = _components(P[:, c], positive)
        phi = _patient_sum(np.where(positive, (v - a) / m, (v - a) / n), inv, n_pat)  # influence on AUC_c
        pos_p = np.bincount(inv, weights=positive.astype(float), minlength=n_pat) > 0
        var = sum(_group_var(phi[g]) for g in (pos_p, ~pos_p))
        if var <= 0:
            var = _auc_floor(a, m, n)
        out[f"class_{c}.auc"] = _logit_t(a, var, n_pat - 1)
        phis.append(phi)
        variances.append(var)
        aucs.append(a)
    if aucs:
        F = np.array(phis)
        cov = n_pat / max(n_pat - 1, 1) * (F @ F.T)
        np.fill_diagonal(cov, variances)
        out["auc_macro"] = _logit_t(float(np.mean(aucs)), float(cov.sum()) / len(aucs) ** 2, n_pat - 1)
    return out


def _group_var(phi: np.ndarray) -> float:
    """k/(k-1) x sum of squared deviations of the influences of one group of k patients (DeLong's S/k term)."""
    k = len(phi)
    return float(k / (k - 1) * ((phi - phi.mean()) ** 2).sum()) if k > 1 else 0.0


def _t_mean(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    m, se = float(values.mean()), float(values.std(ddof=1) / np.sqrt(n))
    t = _t(n - 1)
    return m - t * se, m + t * se


def patient_draws(groups: np.ndarray, n_boot: int, seed: int):
    """Yield ``n_boot`` row-index arrays, each a bootstrap resample of patients (not stratified: the class
    counts vary between resamples as they would between samples); all rows of a drawn patient move together."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    rows_of = [np.where(inv == g)[0] for g in range(len(uniq))]
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        yield np.concatenate([rows_of[g] for g in pick])


# --------------------------------------------------------------------------- all metrics
def metric_intervals(y: np.ndarray, probs: list[np.ndarray], groups: np.ndarray, n_boot: int,
                     seed: int) -> dict[str, dict]:
    """``{metric: {value, ci_low, ci_high, ci_method, n, n_boot_valid[, n_too_small]}}`` (module docstring);
    ``probs`` holds one P per repeat (values and the exact intervals use their mean)."""
    y = np.asarray(y)
    P = np.mean(probs, axis=0)
    point = _mean_dicts([point_metrics(y, Pr) for Pr in probs])
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    n_pat = len(uniq)
    C = P.shape[1]
    per_class = np.bincount(y[first], minlength=C)

    def _n(k: str) -> int:
        return int(per_class[_code(k)]) if k.startswith("class_") else n_pat

    out = {k: {"value": v, "ci_low": float("nan"), "ci_high": float("nan"), "ci_method": "bootstrap", "n": _n(k),
               "n_boot_valid": 0} for k, v in point.items()}
    exact = _exact_intervals(y, P, inv, n_pat, per_class, seed)
    for k, (method, lo, hi) in exact.items():
        if k in out:  # the boundary convention (as Jeffreys' for x = n): the interval always holds the estimate
            v = out[k]["value"]
            if np.isfinite(v) and np.isfinite(lo) and np.isfinite(hi):
                lo, hi = min(lo, v), max(hi, v)
            out[k].update(ci_method=method, ci_low=lo, ci_high=hi)
    small = [k for k in out if k.startswith("class_") and out[k]["n"] < MIN_CLASS_N]
    for k in small:
        out[k].update(ci_method="n_too_small", ci_low=float("nan"), ci_high=float("nan"), n_too_small=True)
    boot = [k for k, v in out.items() if v["ci_method"] == "bootstrap"]
    if n_boot > 0 and boot:
        samples: dict[str, list[float]] = {k: [] for k in boot}
        for idx in patient_draws(groups, n_boot, seed):
            draw = _mean_dicts([point_metrics(y[idx], Pr[idx]) for Pr in probs])
            for k in boot:
                samples[k].append(draw.get(k, float("nan")))
        for k, vals in samples.items():
            v = np.asarray(vals, dtype=float)
            v = v[np.isfinite(v)]
            out[k]["n_boot_valid"] = int(v.size)
            if v.size >= max(10, n_boot // 10):
                out[k]["ci_low"], out[k]["ci_high"] = (float(q) for q in np.percentile(v, [2.5, 97.5]))
    return out


def _code(k: str) -> int:
    return int(k[len("class_"):].split(".", 1)[0])


def _exact_intervals(y, P, inv, n_pat, per_class, seed) -> dict[str, tuple[str, float, float]]:
    """The intervals that need no resampling: ``{metric: (ci_method, low, high)}``."""
    pred = P.argmax(axis=1)
    correct_p = _patient_sum((pred == y).astype(float), inv, n_pat) / np.bincount(inv, minlength=n_pat)
    out: dict[str, tuple[str, float, float]] = {"accuracy": ("wilson", *wilson(correct_p.sum(), n_pat))}
    first_y = np.zeros(n_pat, dtype=int)
    first_y[inv[::-1]] = y[::-1]
    present = np.where(per_class > 0)[0]
    x = np.array([correct_p[first_y == c].sum() for c in present])
    out["balanced_accuracy"] = ("jeffreys_mean", *jeffreys_mean(x, per_class[present].astype(float), seed))
    for c in present:
        out[f"class_{c}.recall"] = ("wilson", *wilson(correct_p[first_y == c].sum(), per_class[c]))
        pc = _patient_sum((pred == c).astype(float), inv, n_pat) / np.bincount(inv, minlength=n_pat)
        tp = _patient_sum(((pred == c) & (y == c)).astype(float), inv, n_pat) / np.bincount(inv, minlength=n_pat)
        out[f"class_{c}.precision"] = ("wilson", *wilson(tp.sum(), pc.sum()))
    for k, (lo, hi) in auc_intervals(y, P, inv, n_pat).items():
        out[k] = ("delong_macro" if k == "auc_macro" else "delong", lo, hi)
    onehot = np.eye(P.shape[1])[y]
    brier_p = _patient_sum(((P - onehot) ** 2).sum(axis=1), inv, n_pat) / np.bincount(inv, minlength=n_pat)
    out["brier"] = ("t_mean", *_t_mean(brier_p))
    return out


def nested_cv_intervals(y: np.ndarray, probs: list[np.ndarray], outer: list[tuple[int, np.ndarray, int]],
                        point: dict[str, dict]) -> dict[str, dict]:
    """Nested-CV intervals that include the refitting: the metric on every outer test fold (repeat r's
    probabilities on that fold's rows), its variance over the J folds x repeats corrected for the overlap of
    the training sets (Nadeau & Bengio 2003: S^2 (1/J + n_test/n_train)), Student t with J - 1 df, around the
    pooled out-of-fold value of ``point`` (which this updates and returns). Why this one: every fold model is
    a separate fit, so the fold-to-fold spread carries the refitting variance that a bootstrap of the pooled
    predictions (fixed fitted models) leaves out, and it costs no extra fit (a bootstrap with refitting would
    multiply the nested CV's cost by its resamples). Per-class metrics of classes below MIN_CLASS_N patients
    stay without an interval."""
    per_fold: dict[str, list[float]] = {k: [] for k in point}
    ratio = []
    for r, te, n_train in outer:
        m = point_metrics(y[te], probs[r][te])
        for k in per_fold:
            per_fold[k].append(m.get(k, float("nan")))
        ratio.append(len(te) / max(n_train, 1))
    for k, vals in per_fold.items():
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        rec = point[k]
        rec["n_boot_valid"] = 0
        if rec.get("n_too_small") or v.size < 2 or rec["value"] is None or not np.isfinite(rec["value"]):
            continue
        var = v.var(ddof=1) * (1 / v.size + float(np.mean(ratio)))
        t = _t(v.size - 1)
        lo, hi = rec["value"] - t * np.sqrt(var), rec["value"] + t * np.sqrt(var)
        if k != "brier":
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        rec.update(ci_low=float(lo), ci_high=float(hi), ci_method="nadeau_bengio", n_folds=int(v.size))
    return point


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
    return jsonable({k: x if isinstance(x, (int, np.integer, str, bool)) else round(float(x), 6)
                     for k, x in v.items()})  # NaN -> None; counts, flags and method names stay as they are


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
