"""The binary sub-tasks (classification.targets) on the main task's split, the source ablation and the
importance share (classification.ablation), Table 1 - in the classify stage's outputs and the report."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cervirad import files
from cervirad.classification.data import load_table
from cervirad.classification.targets import binary_table
from cervirad.io import write_table
from cervirad.files import write_json
from cervirad.rundir import RunDir
from cervirad.stages import stage_inputs
from tests.classification.synthetic import synthetic_table


def _read(p):
    return json.loads(p.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run_with_targets(tmp_path_factory, fast_cfg):
    from cervirad.classification.stage import run as classify

    df = synthetic_table({0: 8, 2: 10, 6: 20, 7: 8}, n_features=40, informative=10, signal=1.2, seed=5)
    d = tmp_path_factory.mktemp("targets_run")
    cc = replace(fast_cfg.classification, models=("lr",), k_grid=(5,), selectors=("anova",),
                 targets=("pathologic_typing", "large_cell"), ablation=True,
                 calibration="prior")
    cfg = replace(fast_cfg, classification=cc)
    r = RunDir(d, cfg)
    write_json(d / "splits.json", {p: sorted(df.loc[df.split == p, "patient_id"]) for p in ("train", "val", "test")})
    write_table(df, d / "features" / "features.parquet")
    writes: list[Path] = []  # every file the stage writes through files.write_text / write_json, in order
    real = files.atomic_path

    def spy(path):
        writes.append(Path(path))
        return real(path)

    with pytest.MonkeyPatch.context() as mp, r.stage("classify") as st:
        mp.setattr(files, "atomic_path", spy)
        classify(cfg, stage_inputs("classify", r.path), st)
    return r, df, writes


def test_binary_targets_are_bits_of_the_category():
    df = synthetic_table({0: 3, 3: 3, 4: 3, 7: 3}, n_features=12, informative=2, seed=1)
    t = load_table(df.drop(columns="split"), "patient_id", "Pathologic_typing")
    cat = t.classes[t.y]
    assert (binary_table(t, "large_cell").y == (cat >= 4)).all()
    assert (binary_table(t, "non_keratinizing").y == np.isin(cat, [2, 3, 6, 7])).all()
    assert (binary_table(t, "adenocarcinoma").y == (cat % 2 == 1)).all()
    b = binary_table(t, "adenocarcinoma")
    assert b.X is t.X and (b.ids == t.ids).all() and b.features == t.features


@pytest.mark.slow  # one classify run with a sub-task and the ablation: ~25 s on a busy 2-core machine
def test_every_target_uses_the_same_split_and_features(run_with_targets):
    r, df, _ = run_with_targets
    out = r.classification_dir
    main_pred = pd.read_csv(out / "predictions.csv")
    main_card = _read(out / "model_card.json")
    table = _read(out / "targets.json")
    assert [row["target"] for row in table["rows"]] == ["pathologic_typing", "large_cell"]
    for target in ("large_cell",):
        sub = out / "targets" / target
        pred = pd.read_csv(sub / "predictions.csv")
        assert list(pred["patient_id"]) == list(main_pred["patient_id"])  # the same test patients, same order
        card = _read(sub / "model_card.json")
        assert card["feature_columns"] == main_card["feature_columns"]
        assert card["training_patients"] == main_card["training_patients"]
        assert card["class_codes"] == [0, 1]
        truth = df.set_index("patient_id").loc[pred["patient_id"], "Pathologic_typing"].to_numpy()
        assert (pred["Pathologic_typing"].to_numpy() == (truth >= 4)).all()
    m = _read(out / "metrics.json")
    for target in ("large_cell",):
        for k in ("auc_macro", "accuracy"):
            v = m[f"target.{target}.{k}"]
            assert {"value", "ci_low", "ci_high", "n"} <= set(v)


@pytest.mark.slow  # one classify run with a sub-task and the ablation: ~25 s on a busy 2-core machine
def test_ablation_rows_with_cis_and_importance_share(run_with_targets):
    r, _, _ = run_with_targets
    out = r.classification_dir
    ab = _read(out / "ablation.json")
    m = _read(out / "metrics.json")
    rows = {row["source"]: row for row in ab["rows"]}
    assert set(rows) == {"clinical", "radiomics", "histogram", "all"}
    assert rows["clinical"]["n_columns"] == 8 and rows["histogram"]["n_columns"] == 9
    assert rows["all"]["n_columns"] == 40
    for row in rows.values():
        auc = row["auc_macro"]
        assert auc["ci_low"] <= auc["value"] <= auc["ci_high"] and auc["n"] == m["n_eval_patients"]
    assert rows["all"]["auc_macro"]["value"] == pytest.approx(m[f"{ab['model']}.auc_macro"]["value"])
    assert m["ablation.clinical.auc_macro"] == rows["clinical"]["auc_macro"]
    share = _read(out / "summary.json")["importance_share"]
    assert sum(v["n_selected"] for v in share.values()) == 5  # k = 5
    shares = [v["permutation_share"] for v in share.values() if v["permutation_share"] is not None]
    assert not shares or sum(shares) == pytest.approx(1.0)
    assert m["table1_file"] == "table1.csv" and (out / "table1.csv").is_file()
    assert m["calibration_method"] == "prior" and "lr.calibration_slope" in m


@pytest.mark.slow  # one classify run with a sub-task and the ablation: ~25 s on a busy 2-core machine
def test_report_shows_the_new_sections(run_with_targets):
    from cervirad.report import build_report

    r, _, _ = run_with_targets
    html = build_report(r, None).read_text(encoding="utf-8")
    for title in ("Table 1: baseline characteristics", "Calibration after SMOTE",
                  "Binary sub-tasks of the pathological type", "Clinical vs radiomics vs histogram features"):
        assert title in html
    assert "large_cell" in html and "Wilson" in html


@pytest.mark.slow  # one classify run with a sub-task and the ablation: ~25 s on a busy 2-core machine
def test_metrics_and_card_are_written_once_per_folder(run_with_targets):
    """Table 1, the sub-tasks, the ablation and the importance share each return their keys: metrics.json and
    model_card.json are written once per evaluation folder (main task, each sub-task), never rewritten."""
    r, _, writes = run_with_targets
    for name in ("metrics.json", "model_card.json"):
        per_folder = Counter(p.parent.name for p in writes if p.name == name)
        assert per_folder == {"classification": 1, "large_cell": 1}, (name, per_folder)
    main = _read(r.classification_dir / "metrics.json")
    assert {"table1_file", "target.large_cell.auc_macro", "ablation.all.auc_macro"} <= set(main)
    assert any(k.startswith("importance_share.") for k in main)


def test_unknown_target_or_calibration_is_refused_at_load():
    from cervirad.config import load_config
    from cervirad.errors import ConfigError

    with pytest.raises(ConfigError, match=r"classification\.targets"):
        load_config(None, ["classification.targets=[pathologic_typing,small_cell]"])
    with pytest.raises(ConfigError, match=r"classification\.calibration"):
        load_config(None, ["classification.calibration=platt"])
    assert load_config(None).classification.targets == ("pathologic_typing",)  # default: the main task only
