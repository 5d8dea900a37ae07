"""Probability calibration after SMOTE, and the calibration metrics of a set of predictions.

Why. SMOTE oversamples every class of a training fold to the size of the largest one, so the
classifier learns from a class prior (uniform) that is not the training cohort's: its
probabilities are shifted towards the rare classes. ``classification.calibration`` chooses how
the final pipelines are corrected (hyperparameters are tuned on the uncalibrated pipeline first;
the calibration then wraps the tuned pipeline and is fitted on the same training rows only - in
nested CV on each outer fold's training part, never on rows that later score the model):

* ``none``: the pipeline's own probabilities.
* ``prior``: prior-shift correction (Saerens et al. 2002; Elkan 2001). With ``pi_train(c)`` the
  class shares of the training rows and ``pi_res(c)`` their shares after SMOTE,
  ``p(c|x) ∝ p_res(c|x) * pi_train(c) / pi_res(c)``, renormalised over the classes. No extra
  data is needed: it undoes exactly the prior SMOTE introduced (weights 1 without SMOTE).
* ``sigmoid`` / ``isotonic``: scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` around
  the WHOLE pipeline (impute ... SMOTE -> classifier): out-of-fold probabilities of the pipeline on
  ``calibration_folds`` stratified folds of the training rows - each fold's pipeline, SMOTE
  included, fitted on the other folds - train one-vs-rest Platt / isotonic maps on ORIGINAL
  (never synthetic) rows; the pipeline is then refitted on all training rows and its
  probabilities go through the maps (renormalised). Calibrating inside the pipeline, after
  SMOTE, would learn the resampled prior again.

:class:`CalibratedPipeline` exposes ``named_steps`` of its fitted pipeline, so the selected
features and the SMOTE report read it like a bare pipeline. Its class is the arg-max of the
calibrated probabilities (test metrics, predictions, ``predict``, and the permutation importance
through :meth:`~CalibratedPipeline.final_estimator`). The hyperparameters were tuned before the
calibration, on the uncalibrated pipeline's labels (tuning every candidate through
CalibratedClassifierCV would multiply the grid's cost by ``calibration_folds + 1``); with
``calibration: none`` tuning and reporting use one rule.

Metrics (:func:`calibration_metrics`, the ONE definition for internal test, nested CV, predicted masks
and external validation; ``cervirad evaluate`` calls it too), per class one-vs-rest on the evaluated
rows, for every class the model saw in training with both positives and negatives among them:

* calibration intercept ("calibration-in-the-large"): ``a`` in ``logit P(y=c) = a + logit(p_c)``
  (the logit of the predicted probability as offset, slope fixed at 1); 0 = the mean predicted
  probability matches the observed rate, > 0 = under-prediction;
* calibration slope: ``b`` in ``logit P(y=c) = a + b * logit(p_c)``; 1 = ideal, < 1 = too extreme
  (overfitting), > 1 = too timid;

both by unpenalised maximum likelihood (Newton; probabilities clipped to [1e-6, 1 - 1e-6]). A fit
that does not converge (e.g. complete separation in a tiny test set) is kept as a row with value
null and ``converged: false`` - never silently dropped. Each class carries its positive count; its
95 % interval is the Wald interval from the fit's observed information, and none below
``MIN_CLASS_N`` positives (``n_too_small``). The model-level value is the mean over the classes
(binary: the positive class only, since the two one-vs-rest fits mirror each other) only when every
class's fit converged - otherwise null, with the classes that did not converge named; its interval
is a percentile bootstrap over patients (not stratified), over the resamples in which every class's
fit converged (``n_boot_valid``).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

METHODS = ("none", "prior", "sigmoid", "isotonic")
CALIBRATION_DEFINITION = (
    "per class one-vs-rest on the evaluated rows (classes seen in training, with positives and negatives): "
    "intercept a of logit P(y=c) = a + logit(p_c) (offset, slope 1; 0 ideal) and slope b of logit P(y=c) = "
    "a + b logit(p_c) (1 ideal), unpenalised maximum likelihood, each with its positive count, converged flag and "
    "Wald 95 % interval (none below 5 positives); model value = mean over those classes (binary: the positive "
    "class) only when every class's fit converged, else null; its interval a patient bootstrap")
METHOD_TEXT = {
    "none": "none: the pipeline's own probabilities",
    "prior": "prior: prior-shift correction undoing SMOTE's class prior (Saerens et al. 2002), no extra data",
    "sigmoid": "sigmoid: Platt maps on out-of-fold probabilities of the training rows (CalibratedClassifierCV)",
    "isotonic": "isotonic: isotonic maps on out-of-fold probabilities of the training rows (CalibratedClassifierCV)",
}
CLIP = 1e-6


# --------------------------------------------------------------------------- the wrapper
def prior_weights(pipe, y: np.ndarray) -> np.ndarray:
    """``pi_train(c) / pi_res(c)`` per class of ``pipe.classes_``: training shares over the shares the
    fitted SMOTE step resampled to (all 1 when the pipeline has no sampler)."""
    classes = np.asarray(pipe.classes_)
    train = np.array([(np.asarray(y) == c).sum() for c in classes], dtype=float)
    smote = pipe.named_steps.get("smote")
    report = getattr(smote, "report_", None)
    if report is None:
        return np.ones(len(classes))
    after = report["counts_after"]
    res = np.array([float(after.get(c.item() if hasattr(c, "item") else c, 0)) for c in classes])
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (train / train.sum()) / (res / res.sum())
    return np.where(np.isfinite(w), w, 1.0)


class CalibratedPipeline(ClassifierMixin, BaseEstimator):
    """A fitted classification pipeline with calibrated probabilities (module docstring).

    ``method``: ``prior``, ``sigmoid`` or ``isotonic``; ``cv``: folds of the sigmoid/isotonic
    calibration (stratified, group-aware with ``groups``); ``random_state`` seeds them.
    ``predict`` is the arg-max of the calibrated probabilities (one decision rule).
    """

    def __init__(self, pipeline=None, method: str = "prior", cv: int = 3, random_state: int = 0):
        self.pipeline = pipeline
        self.method = method
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        y = np.asarray(y)
        if self.method == "prior":
            return self._with_prior(clone(self.pipeline).fit(X, y), y)
        elif self.method in ("sigmoid", "isotonic"):
            from sklearn.calibration import CalibratedClassifierCV

            from .estimators import make_cv

            folds = make_cv(y, groups, self.cv, self.random_state)
            self.calibrator_ = CalibratedClassifierCV(clone(self.pipeline), method=self.method, cv=folds,
                                                      ensemble=False).fit(X, y)
            self.pipeline_ = self.calibrator_.calibrated_classifiers_[0].estimator
        else:
            raise ValueError(f"CalibratedPipeline.method must be one of {METHODS[1:]}, got {self.method!r}")
        self.classes_ = np.asarray(self.pipeline_.classes_)
        return self

    @classmethod
    def prior_of(cls, fitted, y):
        """The prior correction of a pipeline already fitted on the rows labelled ``y`` (no refit: the
        correction needs only the class counts before and after its SMOTE step)."""
        return cls(fitted, "prior")._with_prior(fitted, np.asarray(y))

    def _with_prior(self, fitted, y):
        self.pipeline_ = fitted
        self.weights_ = prior_weights(fitted, y)
        self.classes_ = np.asarray(fitted.classes_)
        return self

    @property
    def named_steps(self):
        return self.pipeline_.named_steps

    def predict_proba(self, X) -> np.ndarray:
        return _calibrated_proba(self, self.pipeline_, X)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def final_estimator(self):
        """The classifier step with this calibration, on the rows as the classifier sees them (after
        selection): the permutation importance scores it, so it ranks features by the reported labels."""
        return _CalibratedStep(self)


def _calibrated_proba(wrapper: CalibratedPipeline, est, X) -> np.ndarray:
    """Calibrated probabilities of ``est`` (the fitted pipeline, or its classifier step on selected rows)."""
    if wrapper.method == "prior":
        P = est.predict_proba(X) * wrapper.weights_
        return P / np.clip(P.sum(axis=1, keepdims=True), 1e-300, None)
    import copy

    fitted = copy.copy(wrapper.calibrator_.calibrated_classifiers_[0])  # the fitted one-vs-rest maps
    fitted.estimator = est
    return fitted.predict_proba(X)


class _CalibratedStep(ClassifierMixin, BaseEstimator):
    """A fitted wrapper's classifier step with its calibration (see :meth:`CalibratedPipeline.final_estimator`)."""

    def __init__(self, wrapper=None):
        self.wrapper = wrapper

    @property
    def classes_(self):
        return self.wrapper.classes_

    def fit(self, X, y=None):  # already fitted: permutation importance never refits
        return self

    def predict_proba(self, X) -> np.ndarray:
        return _calibrated_proba(self.wrapper, self.wrapper.named_steps["clf"], X)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def calibrate_search(search, X, y, groups, ccfg, seed: int):
    """Replace a tuned search's ``best_estimator_`` by its calibrated version, fitted on the same rows
    (``classification.calibration``; ``none`` leaves it as is). Returns the search."""
    method = getattr(ccfg, "calibration", "none")
    if method == "none":
        return search
    if method == "prior":  # the tuned pipeline was refitted on exactly these rows
        search.best_estimator_ = CalibratedPipeline.prior_of(search.best_estimator_, y)
        return search
    wrapper = CalibratedPipeline(clone(search.best_estimator_), method, ccfg.calibration_folds, seed)
    search.best_estimator_ = wrapper.fit(X, y, groups=groups)
    return search


# --------------------------------------------------------------------------- metrics
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), CLIP, 1 - CLIP)
    return np.log(p / (1 - p))


def _newton(Z: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 50) -> tuple | None:
    """Unpenalised logistic regression ``logit P(y) = offset + Z beta``: (beta, covariance) or None if it
    does not converge."""
    beta = np.zeros(Z.shape[1])
    for _ in range(iters):
        eta = np.clip(offset + Z @ beta, -50, 50)
        mu = 1 / (1 + np.exp(-eta))
        W = mu * (1 - mu)
        H = Z.T @ (Z * W[:, None])
        try:
            step = np.linalg.solve(H, Z.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            if not np.all(np.abs(beta) < 1e3):
                return None
            try:
                return beta, np.linalg.inv(H)
            except np.linalg.LinAlgError:
                return None
    return None


def _fits(y: np.ndarray, p: np.ndarray) -> tuple[tuple | None, tuple | None]:
    """(intercept, its SE) and (slope, its SE) of binary outcomes ``y`` given probabilities ``p``; None where
    the fit does not converge."""
    y = np.asarray(y, dtype=float)
    lp = _logit(p)
    if y.min() == y.max():
        return None, None
    a = _newton(np.ones((len(y), 1)), y, lp)
    b = _newton(np.column_stack([np.ones(len(y)), lp]), y, np.zeros(len(y))) if np.ptp(lp) > 0 else None
    ia = None if a is None else (float(a[0][0]), float(np.sqrt(a[1][0, 0])))
    ib = None if b is None else (float(b[0][1]), float(np.sqrt(b[1][1, 1])))
    return ia, ib


def _wald(fit: tuple | None, n_pos: int) -> dict:
    from .metrics import MIN_CLASS_N, _z

    if fit is None:
        return {"value": None, "ci_low": None, "ci_high": None, "ci_method": "not converged", "n": n_pos,
                "converged": False}
    if n_pos < MIN_CLASS_N:
        return {"value": fit[0], "ci_low": None, "ci_high": None, "ci_method": "n_too_small", "n": n_pos,
                "converged": True, "n_too_small": True}
    return {"value": fit[0], "ci_low": fit[0] - _z() * fit[1], "ci_high": fit[0] + _z() * fit[1],
            "ci_method": "wald", "n": n_pos, "converged": True}


def _evaluated(y: np.ndarray, C: int, known: np.ndarray) -> list[int]:
    """Classes with a calibration fit: seen in training, with positives and negatives among the rows."""
    return [c for c in range(C) if known[c] and 0 < (y == c).sum() < len(y)]


def _model_level(per_class: dict, C: int) -> dict[str, float | None]:
    use = [per_class[C - 1]] if C == 2 and (C - 1) in per_class else list(per_class.values())
    out = {}
    for key in ("intercept", "slope"):
        vals = [v[key]["value"] for v in use]
        out[key] = float(np.mean(vals)) if vals and all(v is not None for v in vals) else None
    return out


def calibration_metrics(y: np.ndarray, P: np.ndarray, known: np.ndarray | None = None, n_boot: int = 0,
                        seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """``{"per_class": {code: {intercept, slope: {value, ci_low, ci_high, ci_method, n, converged},
    n_positive}}, "intercept": {...}, "slope": {...}}`` (module docstring); ``known``: classes the model saw in
    training (others are left out); ``n_boot``: resamples of the model-level interval."""
    y = np.asarray(y)
    C = P.shape[1]
    known = np.ones(C, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    classes = _evaluated(y, C, known)
    per_class = {}
    for c in classes:
        yc = (y == c).astype(float)
        a, b = _fits(yc, P[:, c])
        n_pos = int(yc.sum())
        per_class[c] = {"intercept": _wald(a, n_pos), "slope": _wald(b, n_pos), "n_positive": n_pos}
    point = _model_level(per_class, C)
    failed = [c for c, v in per_class.items() if not (v["intercept"]["converged"] and v["slope"]["converged"])]
    out = {"per_class": per_class, "classes_not_converged": failed}
    boots = _boot_model_level(y, P, classes, C, n_boot, seed, groups) if n_boot and classes else None
    for key in ("intercept", "slope"):
        rec = {"value": point[key], "ci_low": None, "ci_high": None, "ci_method": "bootstrap",
               "n": int(len(np.unique(groups)) if groups is not None else len(y)), "n_boot_valid": 0,
               "n_classes": len(classes)}
        if boots is not None and point[key] is not None:
            v = np.asarray([b[key] for b in boots if b[key] is not None], dtype=float)
            rec["n_boot_valid"] = int(v.size)
            if v.size >= max(10, n_boot // 10):
                rec["ci_low"], rec["ci_high"] = (float(q) for q in np.percentile(v, [2.5, 97.5]))
        out[key] = rec
    return out


def _boot_model_level(y, P, classes, C, n_boot, seed, groups) -> list[dict]:
    """Model-level intercept and slope in patient resamples (None where a class's fit fails)."""
    from .metrics import patient_draws

    groups = np.arange(len(y)).astype(str) if groups is None else groups
    out = []
    for idx in patient_draws(groups, n_boot, seed):
        yb, Pb = y[idx], P[idx]
        per = {}
        for c in classes:
            yc = (yb == c).astype(float)
            if yc.min() == yc.max():
                per = None
                break
            a, b = _fits(yc, Pb[:, c])
            per[c] = {"intercept": {"value": None if a is None else a[0]}, "slope": {"value": None if b is None
                                                                                    else b[0]}}
        out.append(_model_level(per, C) if per else {"intercept": None, "slope": None})
    return out


def flat_calibration(model: str, y: np.ndarray, P: np.ndarray, classes: np.ndarray, known: np.ndarray,
                     n_boot: int = 0, seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """metrics.json keys: ``<model>.calibration_intercept`` / ``_slope`` (model level) and per class
    ``<model>.class_<label>.calibration_intercept`` / ``_slope`` (with ``n`` = its positives, ``converged``)."""
    cal = calibration_metrics(y, P, known, n_boot, seed, groups)
    out = {f"{model}.calibration_intercept": _rounded(cal["intercept"]),
           f"{model}.calibration_slope": _rounded(cal["slope"]),
           f"{model}.calibration_not_converged": [_plain(classes[c]) for c in cal["classes_not_converged"]]}
    for c, v in cal["per_class"].items():
        out[f"{model}.class_{classes[c]}.calibration_intercept"] = _rounded(v["intercept"])
        out[f"{model}.class_{classes[c]}.calibration_slope"] = _rounded(v["slope"])
    return out


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _rounded(rec: dict) -> dict:
    return {k: (round(float(v), 6) if isinstance(v, (float, np.floating)) and np.isfinite(v) else
                (None if isinstance(v, (float, np.floating)) else v)) for k, v in rec.items()}
