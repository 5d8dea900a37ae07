"""Issue 13 items 2 and 5, issue 23 item 1: one macro-AUC definition; intervals chosen per metric that do
not fix the class counts and say the method and the patients each rests on."""
from __future__ import annotations

import numpy as np
import pytest

from cervirad.classification import metrics as ev
from cervirad.report.markup import cell


def _preds(seed=0, counts=(30, 15, 5)):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    P = rng.dirichlet(np.ones(len(counts)), len(y))
    P[np.arange(len(y)), y] += rng.uniform(0, 0.8, len(y))
    return y, P / P.sum(1, keepdims=True)


def test_patient_draws_let_the_class_counts_vary():
    """Issue 23: the resampling no longer fixes each class's count (a class of one patient added no variance)."""
    y, _ = _preds()
    groups = np.array([f"p{i:03d}" for i in range(len(y))])
    draws = list(ev.patient_draws(groups, 200, seed=7))
    assert len(draws) == 200
    counts = {tuple(np.bincount(y[idx], minlength=3)) for idx in draws}
    assert len(counts) > 50 and all(sum(c) == len(y) for c in counts)


def test_majority_class_accuracy_has_a_wilson_interval():
    """Always predicting the majority class: accuracy 0.9 with the Wilson interval of 45/50, not [0.9, 0.9]."""
    y = np.array([0] * 45 + [1] * 5)
    P = np.tile([0.9, 0.1], (50, 1))
    b = ev.metric_intervals(y, [P], np.arange(50).astype(str), 300, 0)
    assert b["accuracy"]["value"] == pytest.approx(0.9) and b["accuracy"]["ci_method"] == "wilson"
    assert (b["accuracy"]["ci_low"], b["accuracy"]["ci_high"]) == pytest.approx(ev.wilson(45, 50))
    assert b["accuracy"]["ci_low"] == pytest.approx(0.786, abs=0.002)


def test_every_metric_names_its_method_and_n():
    y, P = _preds(counts=(30, 15, 1))  # class 2: a single patient
    b = ev.metric_intervals(y, [P], np.arange(len(y)).astype(str), 120, 0)
    methods = {"accuracy": "wilson", "balanced_accuracy": "jeffreys_mean", "auc_macro": "delong_macro",
               "brier": "t_mean", "f1_macro": "bootstrap", "class_0.auc": "delong", "class_1.recall": "wilson",
               "class_2.recall": "n_too_small", "class_2.auc": "n_too_small"}
    for k, method in methods.items():
        assert b[k]["ci_method"] == method, k
    for k, v in b.items():
        assert v["ci_method"] in ev.CI_METHODS, k
        assert v["n"] == ({"class_0": 30, "class_1": 15, "class_2": 1}[k.split(".")[0]] if k.startswith("class_")
                          else 46), k
        if v["ci_method"] == "bootstrap":
            assert 0 < v["n_boot_valid"] <= 120, k
        if v["ci_method"] != "n_too_small":
            assert v["ci_low"] <= v["value"] <= v["ci_high"], k
    assert b["class_2.recall"].get("n_too_small") and np.isnan(b["class_2.recall"]["ci_low"])
    flat = ev.flatten("lr", b, np.array([0, 2, 6]), np.bincount(y))
    assert flat["lr.class_6.recall"]["n"] == 1 and flat["lr.class_6.recall"]["ci_low"] is None
    assert flat["lr.class_6.recall"]["n_too_small"] is True and flat["lr.accuracy"]["ci_method"] == "wilson"
    assert "n too small" in cell(flat["lr.class_6.recall"])  # the report says so instead of an interval


def test_macro_auc_of_perfect_separation_keeps_a_width():
    y, _ = _preds(counts=(3, 3, 3))
    P = np.eye(3)[y] * 0.8 + 0.1
    b = ev.metric_intervals(y, [P], np.arange(9).astype(str), 0, 0)
    assert b["auc_macro"]["value"] == 1.0 and b["auc_macro"]["ci_low"] < 0.95 and b["auc_macro"]["ci_high"] <= 1.0


def test_without_bootstrap_only_the_resampled_metrics_lack_an_interval():
    y, P = _preds()
    b = ev.metric_intervals(y, [P], np.arange(len(y)).astype(str), 0, 0)
    assert b["auc_macro"]["n_boot_valid"] == 0 and b["auc_macro"]["n"] == len(y)
    assert b["auc_macro"]["ci_low"] < b["auc_macro"]["value"] and np.isnan(b["f1_macro"]["ci_low"])


def test_ci_method_and_auc_definition_are_stated():
    text = ev.ci_method(500)
    assert "Wilson" in text and "DeLong" in text and "not stratified by class" in text and "500 resamples" in text
    assert "every class present" in ev.AUC_MACRO_DEFINITION and "zero probability" in ev.AUC_MACRO_DEFINITION
    doc = " ".join(ev.__doc__.split())
    assert "None of them fixes the class counts" in doc and "probability column, which is 0" in doc


def test_nested_cv_intervals_include_the_fold_to_fold_spread():
    """Nadeau-Bengio: the interval widens with the spread of the outer-fold metrics."""
    y, P = _preds(counts=(40, 40, 20))
    rng = np.random.default_rng(0)
    folds = [np.sort(rng.permutation(len(y))[:20]) for _ in range(5)]
    outer = [(0, te, 80) for te in folds]
    point = ev.metric_intervals(y, [P], np.arange(len(y)).astype(str), 0, 0)
    nb = ev.nested_cv_intervals(y, [P], outer, {k: dict(v) for k, v in point.items()})
    acc = nb["accuracy"]
    fold_acc = [ev.point_metrics(y[te], P[te])["accuracy"] for te in folds]
    half = ev._t(4) * np.std(fold_acc, ddof=1) * np.sqrt(1 / 5 + 20 / 80)
    assert acc["ci_method"] == "nadeau_bengio" and acc["n_folds"] == 5
    assert acc["ci_high"] - acc["ci_low"] == pytest.approx(2 * half, rel=1e-6)


def test_macro_auc_includes_a_class_the_model_never_saw():
    from sklearn.metrics import roc_auc_score

    y, P = _preds(counts=(20, 20, 8))
    P = P.copy()
    P[:, 2] = 0.0  # class 2 never seen in training
    P /= P.sum(1, keepdims=True)
    m = ev.point_metrics(y, P)
    expected = np.mean([roc_auc_score(y == c, P[:, c]) for c in range(3)])
    assert m["class_2.auc"] == 0.5 and m["auc_macro"] == pytest.approx(expected)
