"""Hostile and broken input (issue 11): config values, tables, overwrite rules, exit codes.

Every case runs the real console entry point (:func:`cervirad.cli.main`) in-process: exit code 2,
exactly one ``cervirad: error:`` line naming the case, and - where a file is protected - its bytes
unchanged. One subprocess checks that loading a config imports no scikit-learn.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .helpers import write_small_cohort


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``cervirad ARGS`` run in this process."""
    from cervirad.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["cervirad", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    code = e.value.code
    return (0 if code is None else code), out, err


def assert_one_line_error(res, *needles) -> str:
    code, _, err = res
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("cervirad: error")]
    assert code == 2, err
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert "np.float64" not in lines[0] and "Traceback" not in err
    return lines[0]


def tree_hash(root: Path, skip: Path | None = None) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and (skip is None or skip not in p.parents)):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(capsys, monkeypatch, *args)


# --------------------------------------------------------------------------- A. config values
BAD_VALUES = [
    ("preprocess.spacing=[0,0,0]", "'preprocess.spacing[0]': expected a number > 0, got 0.0"),
    ("preprocess.spacing=[1,1,-2]", "'preprocess.spacing[2]'"),
    ("preprocess.slice_size=0", "'preprocess.slice_size': expected an integer >= 16 and a multiple of 16, got 0"),
    ("preprocess.slice_size=100", "multiple of 16"),
    ("preprocess.split.train=0.9", "sum to 1"),
    ("segmentation.train_crop=40", "'segmentation.train_crop'"),
    ("segmentation.lr=-1", "'segmentation.lr': expected a number > 0, got -1.0"),
    ("segmentation.lr=.nan", "'segmentation.lr': expected a finite number"),
    ("segmentation.epochs=0", "'segmentation.epochs'"),
    ("segmentation.batch_size=0", "'segmentation.batch_size'"),
    ("segmentation.lstm_hidden=0", "'segmentation.lstm_hidden'"),
    ("segmentation.threshold=1", "'segmentation.threshold': expected a number in (0, 1)"),
    ("segmentation.bootstrap=-1", "'segmentation.bootstrap'"),
    ("classification.bootstrap=-5", "'classification.bootstrap'"),
    ("classification.scoring=nonsense", "'classification.scoring': unknown scorer 'nonsense'"),
    ("classification.scoring=r2", "'classification.scoring': 'r2' is an sklearn scorer but not one"),
    ("classification.k_grid=[]", "'classification.k_grid': expected a non-empty list"),
    ("classification.k_grid=[5,0]", "'classification.k_grid[1]'"),
    ("classification.grids.rf.n_estimators=[-3]", "'classification.grids.rf.n_estimators[0]': expected an integer >= 1"),
    ("classification.grids.rf.n_estimators=[]", "'classification.grids.rf.n_estimators': expected a non-empty list"),
    ("classification.grids.rf.max_depth=[null,0]", "'classification.grids.rf.max_depth[1]'"),
    ("classification.grids.svm.C=[0]", "'classification.grids.svm.C[0]': expected a number > 0"),
    ("classification.grids.xgboost.learning_rate=[-0.1]", "'classification.grids.xgboost.learning_rate[0]'"),
    ("classification.grids.rf.n_estimator=[10]", "not a parameter of the rf classifier; did you mean 'n_estimators'"),
    ("classification.grids.rf.n_jobs=[4]", "set by cervirad"),
    ("classification.grids.knn.k=[3]", "unknown model 'knn'"),
]


@pytest.mark.parametrize("override,needle", BAD_VALUES, ids=[o.split("=")[0] + "=" + o.split("=")[1][:12]
                                                             for o, _ in BAD_VALUES])
def test_config_value_refused_at_load(tmp_path, cli, override, needle):
    run = tmp_path / "run"
    assert_one_line_error(cli("validate", "--manifest", tmp_path / "none.csv", "--run-dir", run, "--set", override),
                          needle, "Config key")
    assert not run.exists()  # refused before anything is written


def test_several_bad_values_are_counted(tmp_path, cli):
    line = assert_one_line_error(cli("validate", "--manifest", tmp_path / "none.csv", "--run-dir", tmp_path / "r",
                                     "--set", "segmentation.lr=0", "--set", "preprocess.slice_size=8"),
                                 "+1 more problem(s)")
    assert "preprocess.slice_size" in line


def test_static_tables_match_the_libraries():
    """The load-time tables (no sklearn import) equal what the estimators and sklearn say."""
    from sklearn.metrics import get_scorer_names

    from cervirad.classifiers import CLASSIFIERS, make_classifier
    from cervirad.config import SCORERS, STRIDE
    from cervirad.segmentation.model import MULTIPLE

    for name, entry in CLASSIFIERS.items():
        assert set(entry.params) == set(make_classifier(name, 0).get_params()), name
        assert set(entry.ranges) <= set(entry.params) and set(entry.grid) <= set(entry.params), name
    assert set(SCORERS) <= set(get_scorer_names())
    assert STRIDE == MULTIPLE


def test_loading_a_config_imports_no_sklearn():
    code = ("import sys; from cervirad.config import load_config; "
            "load_config(None, ['classification.scoring=accuracy', 'classification.grids.svm.C=[1, 2]']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_non_utf8_config(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes("# r\xe9glages\nrun: {seed: 1}\n".encode("latin-1"))
    assert_one_line_error(cli("validate", "--config", bad, "--run-dir", tmp_path / "r"),
                          f"Config file '{bad}' is not UTF-8", "line 1", "save the file as UTF-8")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- B. tables
@pytest.fixture
def cohort(tmp_path):
    return write_small_cohort(tmp_path / "cohort", n=4)


def _rewrite(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.write_bytes(text.encode(encoding))


def _csv(path: Path, sep: str = ",") -> str:
    return pd.read_csv(path, dtype=str).to_csv(index=False, sep=sep, lineterminator="\n")


def _set_ids(path: Path, ids: list[str]) -> None:
    """Rewrite the id cells (first column) only, keeping file names."""
    lines = _csv(path).splitlines()
    _rewrite(path, "\n".join([lines[0]] + [i + ln[ln.index(","):] for i, ln in zip(ids, lines[1:])]) + "\n")


def _variant(name: str, manifest: Path, clinical: Path) -> None:
    if name == "bom":
        _rewrite(manifest, "\ufeff" + _csv(manifest))
        _rewrite(clinical, "\ufeff" + _csv(clinical))
    elif name == "semicolon":
        _rewrite(manifest, _csv(manifest, ";"))
        _rewrite(clinical, _csv(clinical, ";").replace(";50;", ";50,5;"))  # a decimal comma, as Excel writes it
    elif name == "tab":
        _rewrite(manifest, _csv(manifest, "\t"))
    elif name == "all_empty_row":
        _rewrite(manifest, _csv(manifest).replace("\nP001,", "\n,,\nP001,", 1))
        _rewrite(clinical, _csv(clinical) + ",,,,\n")


@pytest.mark.parametrize("variant", ["bom", "semicolon", "tab", "all_empty_row"])
def test_table_variants_are_read(tmp_path, cli, cohort, variant):
    manifest, clinical = cohort
    _variant(variant, manifest, clinical)
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "run")
    assert code == 0, err
    fp = json.loads((tmp_path / "run" / "fingerprint.json").read_text(encoding="utf-8"))
    assert fp["n_patients"] == 4 and sorted(r["id"] for r in fp["patients"]) == ["P000", "P001", "P002", "P003"]
    assert "nan" not in err


def test_tables_keep_ids_as_text(tmp_path, cohort):
    from cervirad.io import read_clinical, read_manifest

    manifest, clinical = cohort
    _set_ids(manifest, ["000", "001", "002", "003"])
    _set_ids(clinical, ["000", "001", "002", "NA"])
    assert [p.id for p in read_manifest(manifest)[0]] == ["000", "001", "002", "003"]
    assert read_clinical(clinical)["patient_id"].tolist() == ["000", "001", "002", "NA"]


def test_leading_zeros_never_match(tmp_path, cli, cohort):
    manifest, clinical = cohort
    _set_ids(manifest, ["000", "001", "002", "003"])
    _set_ids(clinical, ["000", "001", "002", "3"])
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "r"),
                          "Patient '003' has no row in clinical table")


@pytest.mark.parametrize("table", ["manifest", "clinical"])
def test_unsafe_id_refused(tmp_path, cli, cohort, table):
    manifest, clinical = cohort
    path = manifest if table == "manifest" else clinical
    evil = "../../../../tmp/ESCAPED/pwn"
    _set_ids(path, ["P000", "P001", evil, "P003"])
    before = tree_hash(tmp_path, skip=tmp_path / "r")
    line = assert_one_line_error(
        cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "r"),
        f"'{path}', line 4: patient id '{evil}' is not a plain name")
    assert "letters, digits" in line
    assert tree_hash(tmp_path, skip=tmp_path / "r") == before
    assert not (tmp_path / "r" / "fingerprint.json").exists()


def test_empty_id_refused(tmp_path, cli, cohort):
    manifest, clinical = cohort
    _set_ids(manifest, ["P000", "", "P002", "P003"])
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "r"),
                          "line 3: empty patient id")


@pytest.mark.parametrize("table,encoding,needle", [
    ("manifest", "latin-1", "not UTF-8 text (it looks like Windows-1252/Latin-1 text): byte 0xe9 on line 2"),
    ("clinical", "latin-1", "not UTF-8 text"),
    ("manifest", "utf-16", "UTF-16"),
])
def test_non_utf8_table(tmp_path, cli, cohort, table, encoding, needle):
    manifest, clinical = cohort
    path = manifest if table == "manifest" else clinical
    _rewrite(path, _csv(path).replace("P000", "P\xe9000" if encoding == "latin-1" else "P000"), encoding)
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "r"),
                          f"'{path}'", needle)


def test_non_utf8_feature_table(tmp_path, cli):
    table = tmp_path / "features.csv"
    table.write_bytes("patient_id,f1,label\nP\xe9,1.0,0\n".encode("latin-1"))
    assert_one_line_error(cli("classify", "--features", table, "--label-column", "label", "--run-dir", tmp_path / "r"),
                          f"feature table '{table}'", "not UTF-8")


def test_one_column_table_names_the_delimiter(tmp_path, cli, cohort):
    manifest, clinical = cohort
    _rewrite(manifest, _csv(manifest).replace(",", " "))
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "r"),
                          "read as comma-separated")


# --------------------------------------------------------------------------- C. outputs: predict, demo-data
@pytest.fixture
def table(tmp_path):
    t = tmp_path / "features.csv"
    t.write_text("patient_id,f1\nP1,1.0\n", encoding="utf-8")
    return t


def test_predict_out_is_a_folder(tmp_path, cli, table):
    (tmp_path / "outdir").mkdir()
    assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table, "--out",
                              tmp_path / "outdir"), "predict --out", "is a folder")


def test_predict_out_equals_features(tmp_path, cli, table):
    before = table.read_bytes()
    for out in (table, tmp_path / "." / "features.csv"):
        assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table, "--out", out),
                              "is the input --features file")
    assert table.read_bytes() == before


def test_predict_out_existing_user_file(tmp_path, cli, table):
    mine = tmp_path / "notes.csv"
    mine.write_text("my,own\n1,2\n", encoding="utf-8")
    before = mine.read_bytes()
    assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table, "--out", mine),
                          "not written by cervirad predict", "--force")
    assert mine.read_bytes() == before
    # the next check (the model) is reached with --force, or when the file is cervirad's own predictions
    assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table, "--out", mine, "--force"),
                          "No model_card.json")
    mine.write_text("patient_id,predicted,prob_0\nP1,0,1.0\n", encoding="utf-8")
    assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table, "--out", mine),
                          "No model_card.json")


def test_predict_out_under_a_file(tmp_path, cli, table):
    assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table, "--out",
                              table / "p.csv"), "is a file, not a folder")


def test_predict_corrupt_model_card(tmp_path, cli, table):
    d = tmp_path / "model" / "classification"
    d.mkdir(parents=True)
    (d / "model_card.json").write_text("{not json", encoding="utf-8")
    assert_one_line_error(cli("predict", "--model", tmp_path / "model", "--features", table), "model_card.json")
    assert not (tmp_path / "features_predictions.csv").exists()


def test_demo_data_out_is_a_file(tmp_path, cli, table):
    before = table.read_bytes()
    assert_one_line_error(cli("demo-data", "--out", table, "--patients", 10), "demo-data --out", "is a file")
    assert table.read_bytes() == before


def test_demo_data_over_a_user_cohort(tmp_path, cli, cohort):
    manifest, clinical = cohort
    before = tree_hash(manifest.parent)
    assert_one_line_error(cli("demo-data", "--out", manifest.parent, "--patients", 10),
                          "already holds manifest.csv and clinical.csv not written by demo-data", "--force")
    assert tree_hash(manifest.parent) == before
    (manifest.parent / "demo.json").write_text("{broken", encoding="utf-8")  # a damaged stamp proves nothing
    assert_one_line_error(cli("demo-data", "--out", manifest.parent, "--patients", 10), "not written by demo-data")


# --------------------------------------------------------------------------- C. run folder not writable
def test_run_dir_under_a_file(tmp_path, cli, cohort, table):
    manifest, clinical = cohort
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", table / "run"),
                          f"Run folder '{table / 'run'}' cannot be written")


def test_read_only_run_dir_reported(tmp_path, cli, cohort, monkeypatch):
    """The permission check itself (as root chmod does not bite, so os.access is made to say no)."""
    manifest, clinical = cohort
    run = tmp_path / "ro"
    run.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == run and mode & os.W_OK
                        else real(p, mode, **kw))
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run),
                          f"Run folder '{run}' cannot be written (Permission denied)")
    assert list(run.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_run_dir_real(tmp_path, cli, cohort):
    manifest, clinical = cohort
    for name, mode in (("ro", 0o555), ("parent/run", None)):
        run = tmp_path / name
        run.parent.mkdir(exist_ok=True)
        if mode is None:
            run.parent.chmod(0o555)
        else:
            run.mkdir()
            run.chmod(mode)
        try:
            assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run),
                                  "cannot be written")
        finally:
            (run if mode else run.parent).chmod(0o755)
