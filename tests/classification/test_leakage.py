"""Leakage and validity: nothing learned ever sees the rows that score it.

* spies on the scaler, the selector and SMOTE record the patient ids (DataFrame index)
  of every fit: inner-CV fits see only their fold's training rows, and no fit of the
  hold-out evaluation ever sees a test patient;
* random labels through the full nested procedure give macro AUC 0.5 +- 0.05, while
  selecting features on all rows first (the leak the paper does not rule out) does not;
* every outer fold's k and hyperparameters are what an inner search on that fold's
  training rows alone picks.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from cervirad.classification import estimators as P
from cervirad.classification.core import evaluate_holdout, nested_cv
from cervirad.classification.data import Table, load_table
from cervirad.classification.metrics import point_metrics
from cervirad.classification.estimators import make_cv
from cervirad.classification.search import search
from cervirad.classification.smote import AdaptiveSMOTE


@pytest.fixture()
def spies(monkeypatch):
    """Record the row ids seen by every fit of the scaler, the selector and SMOTE."""
    seen: dict[str, list[frozenset]] = {"scale": [], "select": [], "smote": []}

    def wrap(cls, method, name):
        real = getattr(cls, method)

        def spy(self, X, *a, **k):
            assert isinstance(X, pd.DataFrame), "spy needs the DataFrame index to identify rows"
            seen[name].append(frozenset(X.index))
            return real(self, X, *a, **k)

        monkeypatch.setattr(cls, method, spy)

    wrap(StandardScaler, "fit", "scale")
    wrap(P.RankSelector, "fit", "select")
    wrap(AdaptiveSMOTE, "fit_resample", "smote")
    return seen


def _frame_table(df: pd.DataFrame) -> Table:
    t = load_table(df, "patient_id", "Pathologic_typing", ("split",))
    X = pd.DataFrame(t.X, index=t.ids, columns=t.features)
    return Table(X, t.y, t.classes, t.ids, t.features, t.name)


def test_inner_cv_fits_see_only_their_training_fold(spies, demo_like, fast_cfg):
    t = _frame_table(demo_like)
    cc = replace(fast_cfg.classification, selectors=("anova", "rfe"))
    res = search("lr", t.X, t.y, None, cc, 42, 1)
    folds = make_cv(t.y, None, cc.cv_folds, 42)
    train_sets = {frozenset(t.ids[tr]) for tr, _ in folds}
    everything = frozenset(t.ids)
    for name in ("scale", "select", "smote"):
        inner = [s for s in spies[name] if s != everything]
        assert set(inner) <= train_sets, name  # every inner fit = one fold's training rows, never more
        assert len(inner) == len(folds) * 2 * 2  # once per fold x k x selector
        assert spies[name].count(everything) == 1  # the single refit of the chosen setting
    for tr, _ in folds:  # each fold's training rows (hence never its validation rows) fitted 4 times
        assert spies["scale"].count(frozenset(t.ids[tr])) == 4
    assert res.best_params_["select__method"] in ("anova", "rfe")


def test_holdout_fits_never_see_test_patients(spies, demo_like, fast_cfg):
    t = _frame_table(demo_like)
    test_mask = (demo_like["split"] == "test").to_numpy()
    fit, test = t.subset(~test_mask), t.subset(test_mask)
    cc = replace(fast_cfg.classification, models=("lr", "rf"))
    res = evaluate_holdout(fit, test, cc, 42, 1, None)
    test_ids = set(test.ids)
    assert len(test_ids) >= 8
    for name, sets in spies.items():
        assert sets, name
        assert all(not (s & test_ids) for s in sets), f"{name} was fitted on a test patient"
    assert {m: P_[0].shape for m, P_ in res.probs.items()} == {"lr": (len(test_ids), 4), "rf": (len(test_ids), 4)}


def _noise(n=240, p=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = rng.integers(0, 2, n)
    ids = np.array([f"R{i}" for i in range(n)])
    return Table(X, y, np.array([0, 1]), ids, [f"f{j}" for j in range(p)], "noise")


def test_random_labels_give_chance_auc_through_nested_cv(fast_cfg):
    t = _noise()
    cc = replace(fast_cfg.classification, models=("lr",), selectors=("anova",), k_grid=(10,), repeats=2,
                 outer_folds=4, grids={"lr": {"C": [0.1]}})
    res = nested_cv(t, cc, 0, 2, None, final=False)
    aucs = [point_metrics(res.y, Pm)["auc_macro"] for Pm in res.probs["lr"]]
    assert abs(np.mean(aucs) - 0.5) <= 0.05, aucs


def test_selecting_features_on_all_rows_first_would_leak(fast_cfg):
    """The contrast that shows the test above can fail: the paper-style leak inflates AUC."""
    t = _noise()
    top = np.argsort(-P.rank_features("anova", t.X, t.y))[:10]
    leaky = Table(t.X[:, top], t.y, t.classes, t.ids, [t.features[j] for j in top], "leaky")
    cc = replace(fast_cfg.classification, models=("lr",), selectors=("anova",), k_grid=(10,), repeats=2,
                 outer_folds=4, grids={"lr": {"C": [0.1]}})
    res = nested_cv(leaky, cc, 0, 2, None, final=False)
    assert np.mean([point_metrics(res.y, Pm)["auc_macro"] for Pm in res.probs["lr"]]) > 0.6


def test_outer_fold_choices_come_from_its_training_rows_only(demo_like, fast_cfg):
    t = load_table(demo_like, "patient_id", "Pathologic_typing", ("split",))
    cc = replace(fast_cfg.classification, models=("lr",), outer_folds=3)
    res = nested_cv(t, cc, 42, 1, None, final=False)
    assert len(res.folds) == 3
    for f in res.folds:
        tr = np.array(f["train_rows"])
        again = search("lr", t.X[tr], t.y[tr], None, cc, 42, 1)
        assert again.best_params_ == f["best_params"]
        assert not set(f["train_rows"]) & set(f["test_rows"])
