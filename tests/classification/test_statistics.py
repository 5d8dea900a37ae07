"""Issue 13 items 2 and 5: one macro-AUC definition; a class-stratified patient bootstrap that says
how many resamples and patients each interval rests on."""
from __future__ import annotations

import numpy as np
import pytest

from cervirad.classification import evaluate as ev
from cervirad.report import _fmt


def _preds(seed=0, counts=(30, 15, 5)):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    P = rng.dirichlet(np.ones(len(counts)), len(y))
    P[np.arange(len(y)), y] += rng.uniform(0, 0.8, len(y))
    return y, P / P.sum(1, keepdims=True)


def test_stratified_draws_keep_every_class_count():
    y, _ = _preds()
    groups = np.array([f"p{i:03d}" for i in range(len(y))])
    draws = list(ev.stratified_draws(y, groups, 200, seed=7))
    assert len(draws) == 200
    for idx in draws:
        np.testing.assert_array_equal(np.bincount(y[idx], minlength=3), [30, 15, 5])
    # still a resample: patients repeat and differ between draws
    assert any(len(np.unique(idx)) < len(y) for idx in draws)
    assert not all(np.array_equal(np.sort(draws[0]), np.sort(d)) for d in draws[1:])


def test_bootstrap_fixes_the_class_mix():
    """Always predicting the majority class: accuracy is its prevalence, fixed by stratification, so its interval
    has zero width (HEAD's unstratified resampling let the prevalence, hence the accuracy, vary)."""
    y = np.array([0] * 45 + [1] * 5)
    P = np.tile([0.9, 0.1], (50, 1))
    b = ev.bootstrap_metrics(y, [P], np.arange(50).astype(str), 300, 0)
    assert b["accuracy"]["value"] == pytest.approx(0.9)
    assert b["accuracy"]["ci_low"] == pytest.approx(0.9) and b["accuracy"]["ci_high"] == pytest.approx(0.9)


def test_every_metric_records_its_valid_resamples_and_n():
    y, P = _preds(counts=(30, 15, 1))  # class 2: a single patient
    b = ev.bootstrap_metrics(y, [P], np.arange(len(y)).astype(str), 120, 0)
    for k, v in b.items():
        assert v["n_boot_valid"] == 120, k  # the class set is fixed: every per-class metric is defined every time
        assert v["n"] == ({"class_0": 30, "class_1": 15, "class_2": 1}[k.split(".")[0]] if k.startswith("class_")
                          else 46), k
    # one patient of class 2: its recall is the same in every resample -> degenerate interval, carried with n = 1
    r = b["class_2.recall"]
    assert r["ci_low"] == r["ci_high"] == r["value"] and r["n"] == 1
    flat = ev.flatten("lr", b, np.array([0, 2, 6]), np.bincount(y))
    assert flat["lr.class_6.recall"]["n"] == 1 and isinstance(flat["lr.class_6.recall"]["n"], int)
    assert {"value", "ci_low", "ci_high", "n", "n_boot_valid"} <= set(flat["lr.accuracy"])
    shown = _fmt(flat["lr.class_6.recall"])
    assert "n=1" in shown  # the report does not present [x, x] as certainty
    assert "n=" not in _fmt(flat["lr.accuracy"]) or flat["lr.accuracy"]["ci_low"] == flat["lr.accuracy"]["ci_high"]


def test_without_bootstrap_n_boot_valid_is_zero():
    y, P = _preds()
    b = ev.bootstrap_metrics(y, [P], np.arange(len(y)).astype(str), 0, 0)
    assert b["auc_macro"]["n_boot_valid"] == 0 and b["auc_macro"]["n"] == len(y)


def test_ci_method_and_auc_definition_are_stated():
    assert ev.ci_method(500).startswith("percentile bootstrap") and "stratified by class" in ev.ci_method(500)
    assert "500 resamples over patients" in ev.ci_method(500)
    assert "every class present" in ev.AUC_MACRO_DEFINITION and "zero probability" in ev.AUC_MACRO_DEFINITION
    doc = " ".join(ev.__doc__.split())
    assert "stratified by class" in doc and "probability column, which is 0" in doc


def test_macro_auc_includes_a_class_the_model_never_saw():
    from sklearn.metrics import roc_auc_score

    y, P = _preds(counts=(20, 20, 8))
    P = P.copy()
    P[:, 2] = 0.0  # class 2 never seen in training
    P /= P.sum(1, keepdims=True)
    m = ev.point_metrics(y, P)
    expected = np.mean([roc_auc_score(y == c, P[:, c]) for c in range(3)])
    assert m["class_2.auc"] == 0.5 and m["auc_macro"] == pytest.approx(expected)
