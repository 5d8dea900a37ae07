"""Calibration after SMOTE (classification.calibration): prior correction, CalibratedClassifierCV kept
inside the training rows, and the calibration intercept / slope metrics."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from cervirad.classification.calibration import CalibratedPipeline, calibration_metrics
from cervirad.classification.core import evaluate_holdout, nested_cv
from cervirad.classification.data import load_table
from cervirad.classification.estimators import build_pipeline, transform_to_selected
from tests.classification.synthetic import synthetic_table


@pytest.fixture(scope="module")
def imbalanced(fast_cfg):
    """80 / 20 binary table with pure-noise features; the stage's config with one cheap model."""
    df = synthetic_table({0: 48, 1: 12}, n_features=30, informative=0, seed=4, nan_fraction=0)
    t = load_table(df.drop(columns="split"), "patient_id", "Pathologic_typing")
    cc = replace(fast_cfg.classification, models=("lr",), k_grid=(5,), selectors=("anova",),
                 grids={"lr": {"C": [1.0]}}, calibration_folds=3)
    return t, cc


def test_prior_correction_restores_the_training_prior(imbalanced):
    """A classifier that predicts its (SMOTE-balanced) training prior: 0.5 / 0.5 before, 0.8 / 0.2 after."""
    t, cc = imbalanced
    pipe = build_pipeline("lr", cc, 0).set_params(clf=DummyClassifier(strategy="prior"), select__k=5)
    raw = pipe.fit(t.X, t.y).predict_proba(t.X)
    np.testing.assert_allclose(raw, 0.5)  # SMOTE balanced the classes
    cal = CalibratedPipeline(build_pipeline("lr", cc, 0).set_params(clf=DummyClassifier(strategy="prior"),
                                                                    select__k=5), "prior").fit(t.X, t.y)
    np.testing.assert_allclose(cal.weights_, [0.8 / 0.5, 0.2 / 0.5])
    np.testing.assert_allclose(cal.predict_proba(t.X), np.tile([0.8, 0.2], (len(t.y), 1)))
    assert (cal.predict(t.X) == 0).all()


@pytest.mark.parametrize("method", ["prior", "sigmoid", "isotonic"])
def test_wrapper_reads_like_a_pipeline_and_importance_uses_its_labels(imbalanced, method):
    t, cc = imbalanced
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = CalibratedPipeline(build_pipeline("lr", cc, 0).set_params(select__k=5), method, 3, 0).fit(t.X, t.y)
    P = w.predict_proba(t.X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert {"impute", "select", "smote", "clf"} <= set(w.named_steps)
    step = w.final_estimator()  # permutation importance scores this on the selected columns
    np.testing.assert_allclose(step.predict_proba(transform_to_selected(w, t.X)), P)
    np.testing.assert_array_equal(w.predict(t.X), w.classes_[P.argmax(axis=1)])


@pytest.mark.parametrize("mode", ["holdout", "nested"])
def test_calibrated_classifier_cv_never_sees_test_rows(imbalanced, monkeypatch, mode):
    """A spy on CalibratedClassifierCV.fit records every row it is given: all training rows, no test row."""
    from sklearn.calibration import CalibratedClassifierCV

    t, cc = imbalanced
    cc = replace(cc, calibration="sigmoid")
    seen: list[np.ndarray] = []
    original = CalibratedClassifierCV.fit

    def spy(self, X, y, **kw):
        seen.append(np.asarray(X).copy())
        return original(self, X, y, **kw)

    monkeypatch.setattr(CalibratedClassifierCV, "fit", spy)
    key = {row.tobytes(): i for i, row in enumerate(np.asarray(t.X))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "holdout":
            test = np.arange(len(t.y)) % 4 == 0
            res = evaluate_holdout(t.subset(~test), t.subset(test), cc, 0, 1, None)
            assert res.probs["lr"][0].shape == (int(test.sum()), 2)
            allowed = [set(np.flatnonzero(~test))]
        else:
            res = nested_cv(t, replace(cc, outer_folds=2), 0, 1, None, final=False)
            allowed = [set(f["train_rows"]) for f in res.folds]
    assert len(seen) == len(allowed)
    for X, train_rows in zip(seen, allowed):
        rows = {key[r.tobytes()] for r in X}
        assert rows == train_rows  # every training row, and nothing else


def intercept_slope(y, p):
    """Calibration intercept and slope of binary outcomes given the positive class's probabilities: the
    model-level values of :func:`calibration_metrics` (a binary model's are its positive class's)."""
    m = calibration_metrics(y, np.column_stack([1 - p, p]))
    return m["intercept"]["value"], m["slope"]["value"]


def test_intercept_and_slope_of_a_perfectly_calibrated_predictor():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.random(p.size) < p).astype(int)
    a, b = intercept_slope(y, p)
    assert a == pytest.approx(0.0, abs=0.05) and b == pytest.approx(1.0, abs=0.05)
    # too extreme (logit doubled): slope 1/2; systematically too low (odds / e): intercept +1
    lp = np.log(p / (1 - p))
    assert intercept_slope(y, 1 / (1 + np.exp(-2 * lp)))[1] == pytest.approx(0.5, abs=0.05)
    assert intercept_slope(y, 1 / (1 + np.exp(-(lp - 1))))[0] == pytest.approx(1.0, abs=0.05)
    # binary P: the model value is the positive class's, multiclass: the mean over classes
    m = calibration_metrics(y, np.column_stack([1 - p, p]))
    assert m["per_class"][1]["intercept"]["value"] == a and m["per_class"][1]["slope"]["value"] == b
    assert m["per_class"][0]["intercept"]["value"] == pytest.approx(-a, abs=1e-6)
    # each class: its positives and a Wald interval around the estimate
    s1 = m["per_class"][1]["slope"]
    assert s1["ci_method"] == "wald" and s1["n"] == int(y.sum()) and s1["ci_low"] < b < s1["ci_high"]
    assert s1["ci_high"] - s1["ci_low"] < 0.2  # 20 000 rows: a narrow interval


def test_separated_outcomes_give_no_slope():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert intercept_slope(y, p)[1] is None  # complete separation: no finite maximum-likelihood slope


def test_a_class_whose_fit_fails_is_marked_and_voids_the_model_mean():
    """Issue 23 item 3: the model-level value no longer averages only the classes that converged."""
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    P = np.full((12, 3), 0.2)
    P[np.arange(12), y] = 0.6
    P[:6] = [[0.9, 0.05, 0.05]] * 3 + [[0.05, 0.9, 0.05]] * 3  # classes 0 and 1 perfectly separated
    P[6:, 2] = [0.55, 0.7, 0.4, 0.65, 0.5, 0.6]
    P[6:, :2] = (1 - P[6:, 2:]) / 2
    m = calibration_metrics(y, P, n_boot=50, seed=0)
    assert 0 in m["classes_not_converged"] and m["per_class"][0]["slope"]["converged"] is False
    assert m["per_class"][0]["n_positive"] == 3 and m["per_class"][2]["slope"]["n"] == 6
    assert m["slope"]["value"] is None and m["slope"]["n_classes"] == 3


def test_prior_of_a_fitted_pipeline_equals_a_fresh_fit(imbalanced):
    """calibrate_search corrects the tuned, already refitted pipeline without refitting it."""
    t, cc = imbalanced
    fitted = build_pipeline("lr", cc, 0).set_params(select__k=5).fit(t.X, t.y)
    a = CalibratedPipeline.prior_of(fitted, t.y)
    b = CalibratedPipeline(build_pipeline("lr", cc, 0).set_params(select__k=5), "prior").fit(t.X, t.y)
    assert a.pipeline_ is fitted
    np.testing.assert_allclose(a.predict_proba(t.X), b.predict_proba(t.X))
