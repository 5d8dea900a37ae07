"""Metrics agree with scikit-learn; bootstrap CIs resample patients."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cervirad.classification.metrics import calibration_points, metric_intervals, point_metrics


@pytest.fixture()
def preds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 80)
    P = rng.dirichlet(np.ones(4), 80)
    P[np.arange(80), y] += rng.uniform(0, 0.8, 80)  # informative but imperfect
    return y, P / P.sum(1, keepdims=True)


def test_point_metrics_match_sklearn(preds):
    y, P = preds
    m = point_metrics(y, P)
    pred = P.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert m[f"precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg, zero_division=0))
        assert m[f"recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg, zero_division=0))
        assert m[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg, zero_division=0))
    assert m["auc_macro"] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr", average="macro"))
    for c in range(4):
        assert m[f"class_{c}.auc"] == pytest.approx(skm.roc_auc_score(y == c, P[:, c]))
    assert m["brier"] == pytest.approx(np.mean(np.sum((P - np.eye(4)[y]) ** 2, axis=1)))


def test_class_unseen_in_training_is_scored_from_its_zero_probability(preds):
    """One macro-AUC definition: every class present in the truth, an unseen one (all-zero column) included."""
    y, P = preds
    P = P.copy()
    P[:, 3] = 0.0
    m = point_metrics(y, P)
    assert m["class_3.auc"] == 0.5
    expected = np.mean([skm.roc_auc_score(y == c, P[:, c]) for c in range(4)])
    assert m["auc_macro"] == pytest.approx(expected)


def test_bootstrap_ci_brackets_the_value_and_narrows_with_more_patients(preds):
    y, P = preds
    small = metric_intervals(y[:30], [P[:30]], np.arange(30).astype(str), 300, 0)
    big = metric_intervals(np.tile(y, 4), [np.tile(P, (4, 1))], np.arange(320).astype(str), 300, 0)
    for b in (small, big):
        assert b["accuracy"]["ci_low"] <= b["accuracy"]["value"] <= b["accuracy"]["ci_high"]
    width = lambda b: b["auc_macro"]["ci_high"] - b["auc_macro"]["ci_low"]  # noqa: E731
    assert width(big) < width(small)


def test_bootstrap_resamples_whole_patients(preds):
    y, P = preds
    dup_y, dup_P = np.repeat(y, 2), np.repeat(P, 2, axis=0)
    per_row = metric_intervals(dup_y, [dup_P], np.arange(160).astype(str), 300, 0)
    per_patient = metric_intervals(dup_y, [dup_P], np.repeat(np.arange(80), 2).astype(str), 300, 0)
    single = metric_intervals(y, [P], np.arange(80).astype(str), 300, 0)
    # two identical rows per patient: resampling patients gives the CI of 80 patients, not of 160 rows
    assert per_patient["accuracy"]["ci_low"] == pytest.approx(single["accuracy"]["ci_low"], abs=1e-9)
    assert per_row["accuracy"]["ci_high"] - per_row["accuracy"]["ci_low"] < \
        per_patient["accuracy"]["ci_high"] - per_patient["accuracy"]["ci_low"]


def test_calibration_points_of_a_perfectly_calibrated_model():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 1.0, 20000)
    y = (rng.uniform(size=20000) > conf).astype(int)  # class 0 correct with probability conf
    P = np.column_stack([conf, 1 - conf])
    mean_conf, acc, _ = calibration_points(y, P)
    np.testing.assert_allclose(acc, mean_conf, atol=0.03)
