"""classification.min_icc: the robust-feature filter step sits inside every fold (spy), drops exactly the
features below the threshold, refuses bad settings, and the classify stage writes its comparison, the
manual-vs-predicted agreement and the report section."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cervirad.classification.core import evaluate_holdout
from cervirad.classification.estimators import build_pipeline, selected_features
from cervirad.classification.robust_filter import RobustnessFilter
from cervirad.classification.estimators import make_cv
from cervirad.config import load_config, with_overrides
from cervirad.errors import ConfigError, InputError
from cervirad.io import write_table
from cervirad.files import write_json
from cervirad.rundir import RunDir
from cervirad.stages import stage_inputs
from tests.classification.test_leakage import _frame_table


def _icc(features: list[str], seed: int = 0) -> np.ndarray:
    """A made-up ICC per column: clinical columns not assessed (NaN), the rest uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    return np.array([np.nan if f.startswith("clin_") else rng.uniform(0, 1) for f in features])


@pytest.fixture()
def filter_spy(monkeypatch):
    seen: list[frozenset] = []
    real = RobustnessFilter.fit

    def spy(self, X, *a, **k):
        assert isinstance(X, pd.DataFrame), "spy needs the DataFrame index to identify rows"
        seen.append(frozenset(X.index))
        return real(self, X, *a, **k)

    monkeypatch.setattr(RobustnessFilter, "fit", spy)
    return seen


def test_filter_fits_inside_every_fold_and_never_on_test_rows(filter_spy, demo_like, fast_cfg):
    t = _frame_table(demo_like)
    cc = replace(fast_cfg.classification, models=("lr",), selectors=("anova",), min_icc=0.5)
    icc = _icc(t.features)
    test_mask = (demo_like["split"] == "test").to_numpy()
    fit, test = t.subset(~test_mask), t.subset(test_mask)
    res = evaluate_holdout(fit, test, cc, 42, 1, None, icc=icc)
    assert filter_spy, "the filter step never ran"
    test_ids = set(test.ids)
    assert all(not (s & test_ids) for s in filter_spy)
    folds = make_cv(fit.y, None, cc.cv_folds, 42)
    train_sets = {frozenset(fit.ids[tr]) for tr, _ in folds}
    inner = [s for s in filter_spy if s != frozenset(fit.ids)]
    assert set(inner) <= train_sets and len(inner) == len(folds) * len(cc.k_grid)
    pipe = res.searches["lr"].best_estimator_
    assert list(pipe.named_steps)[0] == "robust"
    kept = pipe.named_steps["robust"].support_
    assert np.array_equal(kept, ~(icc < 0.5))  # below the threshold: out; NaN (clinical): kept
    names = selected_features(pipe, fit.features)
    lookup = dict(zip(fit.features, icc))
    assert names and all(np.isnan(lookup[n]) or lookup[n] >= 0.5 for n in names)


def test_without_min_icc_the_pipeline_is_unchanged(fast_cfg):
    pipe = build_pipeline("lr", fast_cfg.classification, 0)
    assert "robust" not in pipe.named_steps
    with pytest.raises(ValueError, match="no ICC values"):
        build_pipeline("lr", replace(fast_cfg.classification, min_icc=0.75), 0)


def test_filter_step_checks_its_input():
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match="2 ICC value"):
        RobustnessFilter(np.array([0.1, 0.9]), 0.5).fit(X)
    with pytest.raises(ValueError, match="no feature has an ICC >= 0.95"):
        RobustnessFilter(np.array([0.1, 0.9, 0.2]), 0.95).fit(X)
    f = RobustnessFilter(np.array([0.1, np.nan, 0.8]), 0.75).fit(X)
    assert f.get_support().tolist() == [False, True, True] and f.transform(X).shape == (4, 2)


@pytest.mark.parametrize("overrides, message", [
    (["features.robustness.perturbations=3", "classification.min_icc=1.2"], "expected null or a number in [0, 1]"),
    (["features.robustness.perturbations=3", "classification.min_icc=-0.1"], "expected null or a number in [0, 1]"),
    (["classification.min_icc=0.75"], "features.robustness.perturbations is 0"),
])
def test_bad_min_icc_is_a_one_line_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_classify_stage_writes_comparison_agreement_card_and_report(tmp_path, fast_cfg, demo_like):
    from cervirad.classification.stage import run as classify
    from cervirad.report.feature_icc import icc_sections

    cfg = with_overrides(fast_cfg, ["features.robustness.perturbations=3", "classification.min_icc=0.5",
                                   "classification.models=[lr]", "classification.selectors=[anova]"])
    r = RunDir(tmp_path, cfg)
    write_json(tmp_path / "splits.json", {p: sorted(demo_like.loc[demo_like.split == p, "patient_id"]) for p in
                                          ("train", "val", "test")})
    write_table(demo_like, tmp_path / "features" / "features.parquet")
    pred = demo_like.copy()
    feats = list(pred.columns[3:])
    pred[feats] = pred[feats] * (1 + np.random.default_rng(0).normal(0, 0.05, (len(pred), len(feats))))
    write_table(pred, tmp_path / "features" / "predicted" / "features.parquet")
    image = [f for f in feats if not f.startswith("clin_")]
    icc = _icc(image, seed=1)
    rob = pd.DataFrame({"feature": image, "icc1": icc, "icc1_ci_low": icc - 0.1, "icc1_ci_high": icc + 0.05,
                        "icc3": icc, "icc3_ci_low": icc - 0.1, "icc3_ci_high": icc + 0.05,
                        "feature_class": ["histogram" if f.startswith("hist_") else f.split("_")[1] for f in image],
                        "image_type": ["histogram" if f.startswith("hist_") else f.split("_")[0] for f in image],
                        "n_patients": 48, "n_complete": 48, "n_perturbations": 3})
    write_table(rob, r.robustness)
    with r.stage("classify") as st:
        classify(cfg, stage_inputs("classify", r.path), st)
    out = r.classification_dir
    info = json.loads((out / "robust_filter.json").read_text(encoding="utf-8"))
    n_low = int((icc < 0.5).sum())
    assert info["min_icc"] == 0.5 and info["n_features"] == len(feats) and info["n_kept"] == len(feats) - n_low
    assert info["kept_by_category"]["clinical"]["not_assessed"] == info["kept_by_category"]["clinical"]["kept"]
    comp = info["comparison"]
    assert comp["filter_on"]["n_features_after_filter"] == len(feats) - n_low
    assert comp["filter_off"]["n_features_after_filter"] == len(feats)
    for key in ("filter_on", "filter_off"):
        assert set(comp[key]) >= {"manual", "predicted"}
        manual = comp[key]["manual"]
        assert 0 <= manual["accuracy"] <= 1 and manual["n"] == (demo_like.split == "test").sum()
    for name in ("metrics.json", "model_card.json"):
        assert json.loads((out / name).read_text(encoding="utf-8"))["robust_filter"]["n_kept"] == info["n_kept"]
    agree = pd.read_csv(out / "agreement.csv")
    assert list(agree["feature"]) == image and (agree["icc1"].dropna() > 0.9).mean() > 0.9  # 5 % noise only
    sections = icc_sections(r, r)
    assert len(sections) == 1 and "min_icc = 0.5" in sections[0][2] and "data:image/png" in sections[0][2]
    assert (r.report_files / "robustness_icc.png").is_file()


def test_a_table_run_refuses_min_icc(tmp_path, fast_cfg, demo_like):
    from cervirad.classification.stage import run_table

    cfg = with_overrides(fast_cfg, ["features.robustness.perturbations=3", "classification.min_icc=0.5"])
    write_table(demo_like, tmp_path / "t.csv")
    r = RunDir(tmp_path / "run", cfg)
    with pytest.raises(InputError, match="table run"), r.stage("classify") as st:
        run_table(cfg, stage_inputs("classify", r.path), st, tmp_path / "t.csv", "patient_id", "Pathologic_typing")
