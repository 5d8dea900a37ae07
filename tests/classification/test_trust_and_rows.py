"""predict loads only pickles signed by this installation (or --trust-model) and checks each input row."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace

import joblib
import numpy as np
import pandas as pd
import pytest

from cervirad import signing
from cervirad.classification import predict_table
from cervirad.classification.predict import MAX_LINES
from cervirad.errors import InputError
from cervirad.io import write_table
from cervirad.files import file_hash, write_json
from cervirad.rundir import RunDir
from cervirad.stages import stage_inputs


def run(cfg, r):
    from cervirad.classification.stage import run as classify

    with r.stage("classify") as st:
        return classify(cfg, stage_inputs("classify", r.path), st)


@pytest.fixture(scope="module")
def classified_run(tmp_path_factory, fast_cfg, demo_like):
    """A classified run directory (two models to keep it quick)."""
    cfg = replace(fast_cfg, classification=replace(fast_cfg.classification, models=("lr", "rf")))
    d = tmp_path_factory.mktemp("trust_run")
    r = RunDir(d, cfg)
    write_json(d / "splits.json", {p: sorted(demo_like.loc[demo_like.split == p, "patient_id"]) for p in
                                   ("train", "val", "test")})
    write_table(demo_like, d / "features" / "features.parquet")
    run(cfg, r)
    return r


def card_of(r) -> dict:
    return json.loads((r.path / "classification" / "model_card.json").read_text(encoding="utf-8"))


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real console entry point (its one-line error contract), inheriting os.environ (the test key)."""
    return subprocess.run([sys.executable, "-m", "cervirad.cli", *args], capture_output=True, text=True,
                          encoding="utf-8", env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)


def error_lines(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error:")]


class Planted:
    """Unpickling calls os.mkdir(marker): proof that the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def plant(r, dest, marker):
    """A run-like folder (run.json beside it) whose model.joblib is hostile, with a recomputed sha256."""
    shutil.copytree(r.path / "classification", dest / "classification")
    write_json(dest / "run.json", {})
    model = dest / "classification" / "model.joblib"
    joblib.dump(Planted(marker), model)
    card = json.loads((dest / "classification" / "model_card.json").read_text(encoding="utf-8"))
    card["model_sha256"] = file_hash(model)
    write_json(dest / "classification" / "model_card.json", card)
    return dest


# --------------------------------------------------------------------------- trust
def test_key_is_created_private_outside_runs_and_signs(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "cervirad" / "signing.key"
    monkeypatch.setenv(signing.KEY_ENV, str(path))
    assert signing.load_key() is None and not path.exists()  # verifying never creates a key
    sig = signing.sign_bytes(b"model")
    assert path.is_file() and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert signing.verify_bytes(b"model", sig) and not signing.verify_bytes(b"model!", sig)
    monkeypatch.delenv(signing.KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert signing.key_path() == tmp_path / "xdg" / "cervirad" / "signing.key"
    assert not signing.verify_bytes(b"model", sig)  # another installation (no key) verifies nothing


def test_classify_signs_every_pickle_and_records_training_ranges(classified_run, demo_like):
    card = card_of(classified_run)
    d = classified_run.path / "classification"
    assert set(card["signatures"]) == {"model.joblib", "models/lr.joblib", "models/rf.joblib"}
    for rel, sig in card["signatures"].items():
        assert signing.verify_bytes((d / rel).read_bytes(), sig), rel
    assert card["model_sha256"] == file_hash(d / "model.joblib")
    fit = demo_like[demo_like.split != "test"]
    for f in card["selected_features"]:
        r = card["training_ranges"][f]
        assert r["min"] == pytest.approx(fit[f].min()) and r["max"] == pytest.approx(fit[f].max())
        assert r["iqr"] == pytest.approx(fit[f].quantile(0.75) - fit[f].quantile(0.25))


def test_planted_pickle_beside_run_json_with_recomputed_hash_is_refused(classified_run, demo_like, tmp_path):
    marker = tmp_path / "PWNED"
    planted = plant(classified_run, tmp_path / "X", marker)
    table = tmp_path / "t.csv"
    write_table(demo_like.head(3), table)
    res = cli("predict", "--model", str(planted), "--features", str(table), "--out", str(tmp_path / "p.csv"))
    assert res.returncode == 2, res.stderr
    lines = error_lines(res)
    assert len(lines) == 1 and "not signed by this installation" in lines[0] and "--trust-model" in lines[0]
    assert not marker.exists() and not (tmp_path / "p.csv").exists()
    with pytest.raises(InputError, match="not signed by this installation"):  # no signatures at all: same answer
        card = json.loads((planted / "classification" / "model_card.json").read_text(encoding="utf-8"))
        card.pop("signatures")
        write_json(planted / "classification" / "model_card.json", card)
        predict_table(planted, table)
    assert not marker.exists()


def test_trust_model_runs_an_unsigned_pickle_with_a_warning(classified_run, demo_like, tmp_path, caplog):
    marker = tmp_path / "harmless-marker"
    planted = plant(classified_run, tmp_path / "X", marker)
    with caplog.at_level(logging.WARNING), pytest.raises(InputError, match="not hold a fitted cervirad classifier"):
        predict_table(planted, demo_like.head(3), trust_model=True)
    assert marker.is_dir()  # the pickle's code ran: --trust-model means exactly that
    assert any("--trust-model" in m and "not signed" in m for m in caplog.messages)


def test_genuine_model_predicts_without_trust_model(classified_run, demo_like, tmp_path):
    table, out = tmp_path / "t.csv", tmp_path / "p.csv"
    write_table(demo_like[demo_like.split == "test"], table)
    res = cli("predict", "--model", str(classified_run.path), "--features", str(table), "--out", str(out))
    assert res.returncode == 0, res.stderr
    got = pd.read_csv(out)
    assert got["predicted"].notna().all() and "warning" in got.columns and got["warning"].isna().all()


def test_model_from_another_installation_is_refused(classified_run, demo_like, tmp_path, monkeypatch, caplog):
    copy = tmp_path / "elsewhere"
    shutil.copytree(classified_run.path / "classification", copy)
    monkeypatch.setenv(signing.KEY_ENV, str(tmp_path / "other" / "signing.key"))
    signing.sign_bytes(b"")  # this other installation has a key of its own
    with pytest.raises(InputError, match="not signed by this installation.*another installation.*--trust-model"):
        predict_table(copy, demo_like.head(3))
    with caplog.at_level(logging.WARNING):
        assert predict_table(copy, demo_like.head(3), trust_model=True)["predicted"].notna().all()
    assert any("--trust-model" in m for m in caplog.messages)


# --------------------------------------------------------------------------- rows
def test_row_with_all_selected_features_missing_gets_no_prediction(classified_run, demo_like, caplog):
    sel = card_of(classified_run)["selected_features"]
    df = demo_like[demo_like.split == "test"].copy()
    pid = df["patient_id"].iloc[1]
    df.loc[df.index[1], sel] = np.nan
    with caplog.at_level(logging.WARNING):
        res = predict_table(classified_run.path, df)
    row = res.set_index("patient_id").loc[pid]
    assert pd.isna(row["predicted"]) and row.filter(like="prob_").isna().all()
    assert "no prediction" in row["warning"]
    others = res[res["patient_id"] != pid]
    assert others["predicted"].notna().all() and others.filter(like="prob_").notna().all().all()
    assert sum(pid in m and "missing" in m for m in caplog.messages) == 1


def test_every_row_missing_exits_2(classified_run, demo_like, tmp_path):
    sel = card_of(classified_run)["selected_features"]
    df = demo_like.head(4).copy()
    df[sel] = np.nan
    table = tmp_path / "t.csv"
    write_table(df, table)
    res = cli("predict", "--model", str(classified_run.path), "--features", str(table), "--out",
              str(tmp_path / "p.csv"))
    assert res.returncode == 2, res.stderr
    lines = error_lines(res)
    assert len(lines) == 1 and "selected features missing" in lines[0] and df["patient_id"].iloc[0] in lines[0]
    assert not (tmp_path / "p.csv").exists()


def test_features_far_outside_the_training_range_are_named(classified_run, demo_like, caplog):
    sel = card_of(classified_run)["selected_features"]
    df = demo_like[demo_like.split == "test"].copy()
    pid = df["patient_id"].iloc[0]
    df.loc[df.index[0], sel] = df.loc[df.index[0], sel] * 1000
    with caplog.at_level(logging.WARNING):
        res = predict_table(classified_run.path, df)
    w = res.set_index("patient_id")["warning"]
    assert "far outside the training range" in w[pid] and any(f"'{c}'" in w[pid] for c in sel)
    assert res["predicted"].notna().all()  # a warning, not a refusal
    assert (w.drop(pid) == "").all()  # the untouched test patients are inside the range
    hits = [m for m in caplog.messages if pid in m and "far outside" in m]
    assert len(hits) == 1 and any(f"'{c}'" in hits[0] for c in sel)


def test_range_warnings_are_capped_with_a_count(classified_run, demo_like, caplog):
    sel = card_of(classified_run)["selected_features"]
    df = demo_like.copy()
    df[sel] = df[sel] * 1000 + 1e6
    with caplog.at_level(logging.WARNING):
        res = predict_table(classified_run.path, df)
    assert (res["warning"] != "").all()
    far = [m for m in caplog.messages if "far outside" in m and "patient '" in m]
    assert len(far) == MAX_LINES
    assert any(f"and {len(df) - MAX_LINES} more" in m for m in caplog.messages)


def test_overflowing_and_infinite_values_are_rejected_per_row(classified_run, demo_like, tmp_path, caplog):
    """Issue 26: 1e308 (or inf) in a feature is no number the model can use: that row gets no prediction and
    a warning; the other rows are scored; a table of such rows only is one line and exit 2 (was exit 1)."""
    sel = card_of(classified_run)["selected_features"]
    df = demo_like[demo_like.split == "test"].copy()
    big, inf = df["patient_id"].iloc[0], df["patient_id"].iloc[1]
    df.loc[df.index[0], sel[0]] = 1e308
    df.loc[df.index[1], sel[-1]] = np.inf
    with caplog.at_level(logging.WARNING):
        res = predict_table(classified_run.path, df)
    w = res.set_index("patient_id")
    assert pd.isna(w.loc[big, "predicted"]) and "1e+308" in w.loc[big, "warning"] and sel[0] in w.loc[big, "warning"]
    assert pd.isna(w.loc[inf, "predicted"]) and "inf" in w.loc[inf, "warning"]
    rest = w.drop([big, inf])
    assert rest["predicted"].notna().all() and np.isfinite(rest.filter(like="prob_").to_numpy(float)).all()
    assert any(big in m and "not a usable number" in m for m in caplog.messages)
    df[sel[0]] = 1e308
    table = tmp_path / "t.csv"
    write_table(df, table)
    res = cli("predict", "--model", str(classified_run.path), "--features", str(table), "--out",
              str(tmp_path / "p.csv"))
    assert res.returncode == 2, res.stderr
    lines = error_lines(res)
    assert len(lines) == 1 and "infinite or overflowing" in lines[0] and "1e+308" in lines[0], res.stderr
    assert not (tmp_path / "p.csv").exists()
