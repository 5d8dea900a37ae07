"""One decision rule per model: the class is the arg-max of ``predict_proba`` everywhere.

The stage reports test metrics and predictions from the arg-max of ``predict_proba``; the
inner-CV grid search and the permutation importance score the classifier through
``predict``. For the RBF SVM, plain ``SVC.predict`` is libsvm's one-vs-one vote, which
disagrees with the arg-max of its Platt-scaled probabilities on some rows - so the model
was tuned by one rule and reported by another. These tests hold the rules equal.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import f1_score, get_scorer
from sklearn.svm import SVC

from cervirad.classification import search as search_mod
from cervirad.classification.core import proba_full
from cervirad.classification.estimators import build_pipeline, scorer
from tests.classification.synthetic import synthetic_table


@pytest.fixture(scope="module")
def weak_table(fast_cfg):
    """A weak-signal 4-class table (labels 0, 4, 6, 7), its train rows and the others; codes as the stage uses."""
    df = synthetic_table({0: 10, 4: 14, 6: 26, 7: 10}, n_features=120, informative=12, signal=0.5, seed=0)
    X = df.iloc[:, 3:].to_numpy(dtype=float)
    classes, y = np.unique(df.iloc[:, 2].to_numpy(), return_inverse=True)
    tr = np.flatnonzero(df["split"].to_numpy() == "train")
    te = np.flatnonzero(df["split"].to_numpy() != "train")
    ccfg = replace(fast_cfg.classification, k_grid=(15,), scoring="f1_macro")
    return X, y, classes, tr, te, ccfg


def _argmax_labels(pipe, X):
    return pipe.classes_[np.argmax(pipe.predict_proba(X), axis=1)]


def _quiet_fit(pipe, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe.fit(X, y)


def test_plain_svc_vote_disagrees_with_its_probabilities(weak_table):
    """The contrast (HEAD's rule): a plain SVC pipeline's vote differs from its arg-max on this data."""
    X, y, _, tr, _, ccfg = weak_table
    plain = build_pipeline("svm", ccfg, 0)
    plain.steps[-1] = ("clf", SVC(probability=True, random_state=0))
    _quiet_fit(plain, X[tr], y[tr])
    assert (plain.predict(X) != _argmax_labels(plain, X)).sum() >= 1


@pytest.mark.parametrize("model", ["svm", "lr", "rf", "xgboost"])
def test_predict_is_argmax_of_predict_proba(weak_table, model):
    X, y, _, tr, _, ccfg = weak_table
    pipe = _quiet_fit(build_pipeline(model, ccfg, 0), X[tr], y[tr])
    np.testing.assert_array_equal(pipe.predict(X), _argmax_labels(pipe, X))
    # the classifier alone, on the rows it sees (permutation importance scores it so)
    clf = pipe.named_steps["clf"]
    Xs = _selected(pipe, X)
    np.testing.assert_array_equal(clf.predict(Xs), clf.classes_[np.argmax(clf.predict_proba(Xs), axis=1)])


def test_inner_cv_and_permutation_scores_use_the_reported_labels(weak_table):
    """search._task's candidate score and the importance scorer equal the metric of the reported labels."""
    X, y, classes, tr, te, ccfg = weak_table
    params = {"C": 1.0, "gamma": "scale"}
    (got_params, got), = search_mod._task("svm", ccfg, 0, X, y, tr, te, 15, "anova", None, [params], None)
    assert got_params == params
    pipe = build_pipeline("svm", ccfg, 0).set_params(select__k=15, select__method="anova", clf__C=1.0,
                                                     clf__gamma="scale")
    _quiet_fit(pipe, X[tr], y[tr])
    reported = np.argmax(proba_full(pipe, X[te], len(classes)), axis=1)  # as write_results / predictions.csv
    expected = f1_score(y[te], reported, average="macro", zero_division=0)
    assert got == pytest.approx(expected)
    # the vote would have scored differently on this fold: the test guards the rule, not a coincidence
    vote = SVC.predict(pipe.named_steps["clf"], _selected(pipe, X[te]))
    assert (vote != reported).any()
    # permutation importance scores the bare classifier with scorer(cc.scoring): same labels, same score
    s = scorer(ccfg.scoring)
    s = s if callable(s) else get_scorer(s)
    assert s(pipe.named_steps["clf"], _selected(pipe, X[te]), y[te]) == pytest.approx(expected)


def _selected(pipe, X):
    from cervirad.classification.estimators import transform_to_selected

    return transform_to_selected(pipe, X)
