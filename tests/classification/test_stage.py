"""The classify stage end to end: run directory and any-table modes, outputs, predict, bad input."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cervirad.classification import predict_table
from cervirad.pipeline import classify_table as run_table
from cervirad.cli import app
from cervirad.errors import InputError
from cervirad.io import write_table
from cervirad.files import write_json
from cervirad.layout import CLASSIFICATION, FIGURES as FIGURE_DIR, METRICS
from cervirad.rundir import RunDir
from cervirad.stages import stage_inputs
from tests.classification.synthetic import synthetic_table

def _read(run_dir, name):
    """One JSON artifact of a finished classify stage, where the report reads it."""
    return json.loads((run_dir / CLASSIFICATION / name).read_text(encoding="utf-8"))


def run(cfg, r):
    """The classify stage function on its own (the orchestrator's rules are tested in tests/pipeline)."""
    from cervirad.classification.stage import run as classify

    with r.stage("classify") as st:
        return classify(cfg, stage_inputs("classify", r.path), st)


FIGURES = {"roc_rf", "roc_xgboost", "roc_svm", "roc_lr", "confusion_rf", "confusion_xgboost", "confusion_svm",
           "confusion_lr", "model_comparison", "calibration", "feature_importance", "correlation"}


@pytest.fixture(scope="module")
def classified_run(tmp_path_factory, fast_cfg, demo_like):
    """A run directory with splits.json, features.parquet and predicted-mask features, classified."""
    d = tmp_path_factory.mktemp("cls_run")
    r = RunDir(d, fast_cfg)
    write_json(d / "splits.json", {p: sorted(demo_like.loc[demo_like.split == p, "patient_id"]) for p in
                                   ("train", "val", "test")})
    write_table(demo_like, d / "features" / "features.parquet")
    pred = demo_like.copy()
    feats = pred.columns[3:]
    pred[feats] = pred[feats] * (1 + np.random.default_rng(0).normal(0, 0.05, (len(pred), len(feats))))
    failed = sorted(demo_like.loc[demo_like.split == "test", "patient_id"])[0]  # its predicted mask gave no features
    write_table(pred[pred.patient_id != failed], d / "features" / "predicted" / "features.parquet")
    summary = run(fast_cfg, r)
    return r, summary


def test_run_writes_metrics_with_cis_for_all_models(classified_run):
    r, summary = classified_run
    m = _read(r.path, METRICS)
    for model in ("rf", "xgboost", "svm", "lr"):
        for k in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
                  "precision_weighted", "recall_weighted", "auc_macro", "class_6.auc", "class_6.f1"):
            v = m[f"{model}.{k}"]
            assert {"value", "ci_low", "ci_high", "n", "n_boot_valid", "ci_method"} <= set(v), k
            if v.get("n_too_small"):  # a per-class metric on fewer than 5 patients: no interval (issue 23)
                assert k.startswith("class_") and v["n"] < 5 and v["ci_low"] is None, k
                continue
            assert v["ci_low"] <= v["value"] <= v["ci_high"], k
        assert isinstance(m[f"{model}.class_6.support"], int)
    ev = summary["model_choice"]  # the one-standard-error rule on the inner CV, then the simplest model
    top = max(ev, key=lambda k: ev[k]["inner_cv_mean"])
    eligible = [k for k in ev if ev[k]["inner_cv_mean"] >= ev[top]["inner_cv_mean"] - ev[top]["inner_cv_se_corrected"]]
    assert m["best_model"] == summary["best_model"] in eligible and "one-standard-error" in m["best_model_rule"]
    assert ev[m["best_model"]]["parsimony_rank"] == min(ev[k]["parsimony_rank"] for k in eligible)
    assert m["best.accuracy"] == m[f"{m['best_model']}.accuracy"]  # hold-out: best.* is the final model's
    card = _read(r.path, "model_card.json")
    assert card["calibration"]["method"] == m["calibration_method"] and sum(card["training_class_counts"].values())
    assert all(ev[k]["inner_cv_mean"] == pytest.approx(m[f"{k}.inner_cv_score"], abs=1e-6) for k in ev)
    assert m["n_eval_patients"] == len(json.loads((r.path / "splits.json").read_text(encoding="utf-8"))["test"])
    assert {f.stem for f in (r.classification_dir / FIGURE_DIR).glob("*.png")} == FIGURES
    mp = _read(r.path, "metrics_predicted.json")  # every test patient stays a row: the failed one is scored from the prior
    assert mp["rf.accuracy"]["value"] is not None and mp["n_failed_masks"] == 1
    assert mp["n_eval_patients"] == m["n_eval_patients"] and "prior" in mp["failed_mask_scoring"]
    pp = pd.read_csv(r.path / "classification" / "predictions_predicted.csv")
    assert mp["failed_mask_patients"][0] in set(pp.patient_id.astype(str)) and len(pp) == m["n_eval_patients"]
    assert summary["evaluation"] == "test_split"


def test_run_fits_on_train_and_val_and_keeps_every_model(classified_run, demo_like):
    r, _ = classified_run
    card = json.loads((r.path / "classification" / "model_card.json").read_text(encoding="utf-8"))
    assert card["training_patients"] == int((demo_like.split != "test").sum())
    assert card["classes"] == [0, 2, 6, 7] and card["feature_columns"][0] == "clin_age"
    assert "split" not in card["feature_columns"] and len(card["selected_features"]) in (5, 15)
    for name in ("rf", "xgboost", "svm", "lr"):
        assert (r.path / "classification" / "models" / f"{name}.joblib").is_file()


def test_predict_reproduces_the_test_predictions(classified_run, demo_like):
    r, _ = classified_run
    saved = pd.read_csv(r.path / "classification" / "predictions.csv")
    test = demo_like[demo_like.split == "test"]
    got = predict_table(r.path, test)
    merged = saved.merge(got, on="patient_id", suffixes=("_saved", ""))
    assert len(merged) == len(test)
    assert (merged["predicted_saved"] == merged["predicted"]).all()
    for c in ("0", "2", "6", "7"):
        np.testing.assert_allclose(merged[f"prob_{c}_saved"], merged[f"prob_{c}"], atol=1e-12)


def test_predict_a_signed_copy_needs_the_right_columns_and_bytes(classified_run, demo_like, tmp_path):
    """A copy of this installation's model folder (no run.json) is still signed here: it loads without
    --trust-model (the trust rules themselves: tests/classification/test_trust_and_rows.py)."""
    r, _ = classified_run
    copy = tmp_path / "model"
    shutil.copytree(r.path / "classification", copy)
    table = tmp_path / "t.csv"
    write_table(demo_like.head(5), table)
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(app, ["predict", "--model", str(copy), "--features", str(table), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert predict_table(copy, table, out)["predicted"].notna().all() and out.is_file()
    write_table(demo_like.head(5).drop(columns=["clin_age", "hist_mean"]), table)
    with pytest.raises(InputError, match="lacks 2 feature column.*clin_age, hist_mean"):
        predict_table(copy, table, trust_model=True)
    (copy / "model.joblib").write_bytes(b"tampered")
    with pytest.raises(InputError, match="differs from the sha256"):
        predict_table(copy, demo_like.head(5), trust_model=True)


@pytest.fixture(scope="module")
def binary_csv(tmp_path_factory):
    df = synthetic_table({"benign": 30, "malignant": 24}, n_features=60, informative=6, signal=1.5, seed=8,
                         label="Target").drop(columns="split").rename(columns={"patient_id": "ID"})
    p = tmp_path_factory.mktemp("tab") / "table.csv"
    write_table(df, p)
    return p, df


def test_cli_classifies_any_table_by_nested_cv(binary_csv, tmp_path):
    path, df = binary_csv
    cfg = tmp_path / "c.yaml"
    cfg.write_text("classification:\n  models: [lr, rf]\n  k_grid: [5, 10]\n  cv_folds: 3\n  outer_folds: 3\n"
                   "  bootstrap: 50\n  permutation_repeats: 2\n  selectors: [anova, rfe]\n"
                   "  grids: {lr: {C: [0.1, 1.0]}, rf: {n_estimators: [20], max_depth: [null], "
                   "min_samples_split: [2]}}\nexecution: {n_jobs: 1}\n")
    res = CliRunner().invoke(app, ["classify", "--config", str(cfg), "--features", str(path), "--id-column", "ID",
                                   "--label-column", "Target", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    summary = _read(tmp_path / "out", "summary.json")
    assert summary["evaluation"] == "nested_cv" and len(summary["outer_folds"]) == 6
    assert _read(tmp_path / "out", METRICS)["lr.auc_macro"]["value"] > 0.8
    preds = pd.read_csv(tmp_path / "out" / CLASSIFICATION / "predictions.csv")
    assert len(preds) == len(df) and set(preds["predicted"]) <= {"benign", "malignant"}
    res = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "out"), "--features", str(path),
                                   "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output  # run_table's models are signed by this installation: trusted


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.drop(columns="Target"), "no label column 'Target'"),
    (lambda d: d.assign(Target="x"), "is constant"),
    (lambda d: d.assign(clin_age="old"), "non-numeric feature column.*clin_age"),
    (lambda d: d.assign(ID=["A"] * len(d)), "appears with different labels"),
    (lambda d: d.assign(Target=[None] + list(d.Target[1:])), "is empty for 1 row"),
])
def test_bad_tables_fail_with_one_line(binary_csv, tmp_path, fast_cfg, mutate, message):
    _, df = binary_csv
    p = tmp_path / "bad.csv"
    write_table(mutate(df.copy()), p)
    with pytest.raises(InputError, match=message) as e:
        run_table(fast_cfg, p, "ID", "Target", tmp_path / "out")
    assert "\n" not in str(e.value)


def test_cli_bad_input_exits_2(binary_csv, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path, _ = binary_csv
    exe = Path(sys.executable).parent / "cervirad"
    res = subprocess.run([str(exe), "classify", "--features", str(path), "--id-column", "ID", "--label-column",
                          "Nope", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    errors = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("cervirad: error")]
    assert res.returncode == 2 and len(errors) == 1 and "no label column 'Nope'" in errors[0], res.stderr
    assert "Traceback" not in res.stderr


def test_single_patient_class_inf_and_duplicates_are_explained_fallbacks(binary_csv, tmp_path, fast_cfg, caplog):
    import logging

    _, df = binary_csv
    df = df.copy()
    df.loc[0, "Target"] = "rare"
    df.loc[1, "clin_age"] = np.inf
    df = pd.concat([df, df.iloc[[5]]], ignore_index=True)  # a second row of patient 5
    p = tmp_path / "t.csv"
    write_table(df, p)
    cfg = replace(fast_cfg, classification=replace(fast_cfg.classification, models=("lr",), selectors=("anova",)))
    with caplog.at_level(logging.WARNING):
        s = run_table(cfg, p, "ID", "Target", tmp_path / "out")
    assert s["excluded_classes"] == ["rare"] and s["classes"] == ["benign", "malignant"]
    assert "single patient" in caplog.text and "infinite" in caplog.text and "repeated id" in caplog.text
    assert any("infinite" in n for n in s["notes"])


def test_dask_backend_gives_the_same_choice(binary_csv, fast_cfg):
    from cervirad.classification.data import load_table
    from cervirad.classification.search import search
    from cervirad.parallel import parallel_backend

    _, df = binary_csv
    t = load_table(df, "ID", "Target")
    cc = replace(fast_cfg.classification, selectors=("anova",))
    loky = search("lr", t.X, t.y, None, cc, 0, 2)
    with parallel_backend(replace(fast_cfg.execution, backend="dask", n_jobs=2)):
        dask = search("lr", t.X, t.y, None, cc, 0, 2)
    assert dask.best_params_ == loky.best_params_
    np.testing.assert_array_equal(dask.cv_results_["mean_test_score"], loky.cv_results_["mean_test_score"])


def test_class_absent_from_training_is_reported(tmp_path, fast_cfg, demo_like):
    """All category-7 patients in the test split (as the paper's rare classes may be): reported, no AUC."""
    df = demo_like.copy()
    df.loc[df.Pathologic_typing == 7, "split"] = "test"
    r = RunDir(tmp_path, fast_cfg)
    write_json(tmp_path / "splits.json", {p: sorted(df.loc[df.split == p, "patient_id"]) for p in ("train", "val", "test")})
    write_table(df, tmp_path / "features" / "features.parquet")
    cfg = replace(fast_cfg, classification=replace(fast_cfg.classification, models=("lr", "xgboost"),
                                                   selectors=("anova",)))
    assert not (tmp_path / CLASSIFICATION).exists()
    s = run(cfg, r)
    m = _read(tmp_path, METRICS)
    assert s["classes_absent_from_training"] == [7] and m["n_classes_absent_from_training"] == 1
    assert m["classes_absent_from_training"] == [7] and "every class present" in m["auc_macro_definition"]
    # one macro-AUC definition (as in nested CV): the unseen class is scored from its zero probability
    assert m["lr.class_7.auc"]["value"] == 0.5 and m["lr.class_7.recall"]["value"] == 0.0
    assert m["lr.class_7.support"] == 10
    from sklearn.metrics import roc_auc_score

    best = m["best_model"]
    pred = pd.read_csv(tmp_path / "classification" / "predictions.csv")
    y = pred["Pathologic_typing"].to_numpy()
    score = {c: pred[f"prob_{c}"] if f"prob_{c}" in pred else np.zeros(len(y)) for c in (0, 2, 6, 7)}  # 7: unseen
    aucs = [roc_auc_score(y == c, score[c]) for c in (0, 2, 6, 7)]
    assert m[f"{best}.auc_macro"]["value"] == pytest.approx(np.mean(aucs), abs=1e-5)
    assert m[f"{best}.auc_macro"]["value"] != pytest.approx(np.mean(aucs[:3]), abs=1e-5)  # not the seen-only mean
    from cervirad.report.classification_results import classification_section

    assert "absent from training: <b>7</b>" in classification_section(r, ["lr", "xgboost"])
    card = json.loads((tmp_path / "classification" / "model_card.json").read_text(encoding="utf-8"))
    assert card["classes"] == [0, 2, 6] and card["classes_absent_from_training"] == [7]
