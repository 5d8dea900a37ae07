"""ComBat as a pipeline step (issue 24): reference numbers, no leakage, unseen scanners, the batch column."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cervirad.classification.core import evaluate_holdout
from cervirad.classification.data import load_table
from cervirad.classification.estimators import build_pipeline, selected_features, transform_to_selected
from cervirad.classification.harmonize import (BATCH_FEATURE, ComBat, UnseenBatchError, attach_batch, batch_codes,
                                               make_harmonizer)
from cervirad.classification.harmonize_report import batch_effect, paired_difference
from cervirad.pathology import LABEL
from cervirad.errors import InputError
from tests.classification.synthetic import synthetic_table

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "combat_reference.csv"
FEATS = [f"f{j}" for j in range(6)]


def _reference_X(df: pd.DataFrame) -> np.ndarray:
    return np.column_stack([df[FEATS].to_numpy(), df["age"].to_numpy(), df["batch"].to_numpy(dtype=float)])


@pytest.mark.parametrize("prior,prefix", [("parametric", "p"), ("nonparametric", "np")])
def test_reproduces_neurocombat_reference(prior, prefix):
    """scripts/combat_reference.py: neuroCombat 0.2.12 on 36 patients, 3 scanners, age kept as covariate."""
    df = pd.read_csv(REFERENCE)
    columns = np.array([True] * 6 + [False])  # age: a covariate, never harmonised
    out = ComBat(columns=columns, covariates=(6,), prior=prior).fit_transform(_reference_X(df))
    ref = df[[f"{prefix}_{f}" for f in FEATS]].to_numpy()
    assert np.abs(out[:, :6] - ref).max() < 1e-5  # neuroCombat reads the covariate as float32
    assert np.array_equal(out[:, 6], df["age"].to_numpy())
    assert np.abs(out[:, :6] - df[FEATS].to_numpy()).max() > 0.5  # it did change the features


def _two_scanners(n: int = 60, p: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    batch = (rng.random(n) < 0.5).astype(float)
    X = rng.normal(0, 1, (n, p)) * np.where(batch[:, None] == 1, 2.0, 1.0) + 5 * batch[:, None]
    return X, batch


def test_held_out_rows_never_reach_the_fitted_parameters():
    X, batch = _two_scanners()
    tr, te = np.arange(40), np.arange(40, 60)
    A = np.column_stack([X, batch])
    B = A.copy()
    B[te, :-1] = B[te, :-1] * 100 + 1e3  # a test patient's values changed beyond recognition
    fa, fb = ComBat().fit(A[tr]), ComBat().fit(B[tr])
    for attr in ("alpha_", "var_pooled_", "gamma_star_", "delta_star_"):
        assert np.array_equal(getattr(fa, attr), getattr(fb, attr))
    assert np.array_equal(fa.transform(A[tr]), fb.transform(B[tr]))  # the training transform does not move
    # through the whole tuned pipeline too: the fitted ComBat of the final model is the same
    df = synthetic_table({0: 20, 1: 20}, n_features=30, informative=6, signal=1.5, seed=2)
    labels = np.where(np.arange(len(df)) % 2, "S1", "S2")
    cfg = _cc()
    fit_mask = (df["split"] != "test").to_numpy()
    runs = []
    for scale in (1.0, 1e3):
        d = df.copy()
        cols = [c for c in d.columns if c.startswith(("original", "wavelet", "square", "log"))]
        d.loc[~fit_mask, cols] = d.loc[~fit_mask, cols].astype(float) * scale
        t = attach_batch(load_table(d, "patient_id", LABEL, ("split",)), labels, ["S1", "S2"])
        res = evaluate_holdout(t.subset(fit_mask), t.subset(~fit_mask), cfg, 0, 1, None)
        runs.append(res.searches["lr"].best_estimator_.named_steps["harmonize"])
    assert np.array_equal(runs[0].gamma_star_, runs[1].gamma_star_)
    assert np.array_equal(runs[0].alpha_, runs[1].alpha_)


def _cc(**kw):
    from cervirad.config import load_config

    cfg = load_config(None, ["classification.models=[lr]", "classification.harmonize=combat",
                             "data.batch_column=scanner", "classification.cv_folds=3", "classification.bootstrap=50"])
    return replace(cfg.classification, k_grid=(5,), grids={"lr": {"C": [1.0]}}, selectors=("anova",), **kw)


def test_removes_a_batch_effect_and_keeps_missing_values_and_clinical_columns():
    X, batch = _two_scanners(n=80)
    X[3, 2] = np.nan
    clin = np.arange(80, dtype=float)
    A = np.column_stack([X, clin, batch])
    step = ComBat(columns=np.array([True] * 8 + [False])).fit(A)
    out = step.transform(A)
    assert np.isnan(out[3, 2]) and np.array_equal(out[:, 8], clin)
    before = np.mean([batch_effect(X[:, j], batch)["eta2"] for j in range(8)])
    after = np.mean([batch_effect(out[:, j], batch)["eta2"] for j in range(8)])
    assert before > 0.5 and after < 0.05


def test_unseen_batch_refused_unless_transductive():
    X, batch = _two_scanners(n=60)
    A = np.column_stack([X, batch])
    step = ComBat().fit(A)
    rng = np.random.default_rng(5)
    new = np.column_stack([rng.normal(0, 1, (25, 8)) * 3 + 20, np.full(25, 7.0)])  # scanner 7: never seen
    with pytest.raises(UnseenBatchError, match="not seen"):
        step.transform(new)
    step.transductive = True  # evaluate --harmonize: from the new scanner's own rows, no label anywhere
    out = step.transform(new)
    assert 7.0 in step.transductive_ and step.transductive_[7.0]["n"] == 25
    ref = step.transform(A)  # harmonised training rows
    assert abs(out.mean() - ref.mean()) < 0.5 < abs(new[:, :-1].mean() - ref.mean())


def test_pipeline_consumes_the_batch_column_and_names_features_without_it():
    df = synthetic_table({0: 15, 1: 15}, n_features=20, informative=5, seed=1)
    t = load_table(df, "patient_id", LABEL, ("split",))
    labels = np.where(np.arange(len(df)) < 12, "A", "B")
    tb = attach_batch(t, labels, ["A", "B"])
    assert tb.features[-1] == BATCH_FEATURE and tb.X.shape[1] == t.X.shape[1] + 1
    cc = _cc(harmonize_covariates=("clin_age",))
    h = make_harmonizer(cc, tb.features)
    assert not h.columns[t.features.index("clin_age")] and h.covariates == (t.features.index("clin_age"),)
    assert not any(h.columns[j] for j, f in enumerate(t.features) if f.startswith("clin_"))
    pipe = build_pipeline("lr", cc, 0, harmonizer=h).set_params(select__k=5, select__method="anova").fit(tb.X, tb.y)
    names = selected_features(pipe, tb.features)
    assert len(names) == 5 and BATCH_FEATURE not in names
    assert transform_to_selected(pipe, tb.X).shape == (len(df), 5)
    with pytest.raises(InputError, match="not feature columns"):
        make_harmonizer(_cc(harmonize_covariates=(LABEL,)), tb.features)
    with pytest.raises(InputError, match="carries no batch"):
        make_harmonizer(cc, t.features)
    assert make_harmonizer(replace(cc, harmonize="none"), tb.features) is None


def test_batch_codes_keep_development_order_and_append_new_scanners():
    assert batch_codes(["b", "a", "new", "b", "new2", "new"], ["a", "b"]).tolist() == [1, 0, 2, 1, 3, 2]


def test_config_needs_a_batch_column_for_combat():
    from cervirad.classification.harmonize import check_settings
    from cervirad.config import load_config
    from cervirad.errors import ConfigError
    from cervirad.stages import STAGES, TABLE_STAGES

    with pytest.raises(ConfigError, match="data.batch_column is null"):
        check_settings(load_config(None, ["classification.harmonize=combat"]))
    assert all(s.check == "cervirad.classification.harmonize:check_settings"
               for s in (*STAGES, *TABLE_STAGES) if s.name == "classify")  # run before any stage runs
    cfg = load_config(None, ["classification.harmonize=combat", "data.batch_column=auto"])
    check_settings(cfg)
    assert cfg.classification.harmonize_prior == "parametric" and load_config(None).classification.harmonize == "none"


def test_paired_difference_is_zero_for_identical_predictions():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    P = rng.dirichlet([1, 1], 40)
    d = paired_difference(y, P, P, np.arange(40).astype(str), 100, 0)
    assert d["auc_macro"]["value"] == 0 and d["auc_macro"]["ci_low"] == 0 == d["auc_macro"]["ci_high"]


def test_nested_cv_fits_combat_inside_every_outer_fold():
    from cervirad.classification.core import nested_cv

    df = synthetic_table({0: 18, 1: 18}, n_features=25, informative=6, signal=1.5, seed=4)
    labels = np.where(np.arange(len(df)) % 3 == 0, "S2", "S1")
    t = attach_batch(load_table(df, "patient_id", LABEL, ("split",)), labels, ["S1", "S2"])
    res = nested_cv(t, replace(_cc(), outer_folds=3), 0, 1, None, final=False)
    P = res.probs["lr"][0]
    assert P.shape == (36, 2) and not np.isnan(P).any() and len(res.folds) == 3
