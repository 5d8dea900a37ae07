"""Issue 26: nothing the user owns is overwritten or deleted, and every bad input is exit 2 with one line.

Part A: the former exit-1 cases (table-driven), the YAML limits (the alias bomb refused in under 2 s), the
message fixes. Part B: one test per destroyed-file case, each with a real victim whose bytes are asserted
unchanged. Part C: clean exit (SIGTERM, workers ending with a kill -9'd parent).
Everything runs in-process (:func:`cervirad.cli.main`) or in small subprocesses on tiny inputs.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from .helpers import write_small_cohort
from .test_hostile_config_tables import assert_one_line_error, run_cli, tree_hash


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(capsys, monkeypatch, *args)


@pytest.fixture
def cohort(tmp_path):
    return write_small_cohort(tmp_path / "cohort", n=4)


def _bomb(levels: int) -> str:
    """An alias bomb inside a valid key: classification.grids.rf.n_estimators expands to 10**levels values."""
    lines = ["a0: &a0 [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("x_anchors:\n" + "".join(f"  {ln}\n" for ln in lines)
            + f"classification:\n  grids:\n    rf:\n      n_estimators: *a{levels - 1}\n")


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- A. former exit-1 cases
def _former_exit1_cases(tmp: Path, manifest: Path, clinical: Path) -> list[tuple[str, list, str]]:
    """(case, cervirad arguments, needle of the one error line)."""
    run = tmp / "run"
    val = ["validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run]
    deep = _write(tmp / "deep.yaml", "run: " + "[" * 5000 + "]" * 5000 + "\n")
    bad_yaml = _write(tmp / "bad.yaml", "data: {manifest: x\n  - ]\n")
    py_tag = _write(tmp / "tag.yaml", "data: !!python/object/apply:os.system ['echo pwned']\n")
    latin1 = _write(tmp / "latin1.yaml", "# r\xe9glages\ndata: {manifest: m.csv}\n".encode("latin-1"))
    damaged = tmp / "damaged"
    damaged.mkdir()
    _write(damaged / "run.json", '{"stages": {"validate": {"status": "do')
    wrong_shape = tmp / "wrong_shape"
    wrong_shape.mkdir()
    _write(wrong_shape / "run.json", '{"stages": [1, 2]}')
    ev = ["evaluate", "--run", tmp / "dev", "--out", tmp / "ext", "--config"]
    return [
        ("optional key, wrong type", [*val, "--set", "data.mask_label=2.5"], "'data.mask_label': expected an integer"),
        ("optional key, list", [*val, "--set", "segmentation.budget_minutes=[1]"], "'segmentation.budget_minutes'"),
        ("5000-deep YAML list", ["validate", "--config", deep, "--run-dir", run], "levels deep"),
        ("5000-deep --set", [*val, "--set", "run.seed=" + "[" * 5000 + "]" * 5000], "levels deep"),
        ("evaluate --config bad YAML", [*ev, bad_yaml], "is not valid YAML"),
        ("evaluate --config python tag", [*ev, py_tag], "no !!python tags"),
        ("evaluate --config Latin-1", [*ev, latin1], "is not UTF-8 text"),
        ("damaged run.json", ["validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", damaged],
         "is damaged"),
        ("run.json of the wrong shape", ["validate", "--manifest", manifest, "--run-dir", wrong_shape], "is damaged"),
        ("run.name=/tmp/x", [*val[:-2], "--set", f"run.name={tmp}/x"], "'run.name': expected a plain name"),
        ("run.name=../..", [*val[:-2], "--set", "run.name=../.."], "'run.name': expected a plain name"),
        ("demo-data --seed -1", ["demo-data", "--out", tmp / "demo", "--seed", "-1"], "--seed -1"),
        ("demo-data --patients 10**12", ["demo-data", "--out", tmp / "demo", "--patients", str(10**12)],
         "--patients 1000000000000"),
        ("train-seg --folds 0", ["train-seg", "--run-dir", run, "--folds", "0"], "'segmentation.folds'"),
        ("unknown option", ["train-seg", "--fold", "2"], "No such option: --fold"),
        ("segment --out an existing file", ["segment", "--model", tmp / "m.pt", "--input", manifest, "--out",
                                            clinical], "is a file"),
    ]


def test_former_exit1_cases_give_2(tmp_path, cli, cohort):
    manifest, clinical = cohort
    before = tree_hash(manifest.parent)
    for case, args, needle in _former_exit1_cases(tmp_path, manifest, clinical):
        line = assert_one_line_error(cli(*args), needle)
        assert "internal error" not in line and "Usage:" not in line, (case, line)
        assert not (tmp_path / "run" / "fingerprint.json").exists() and not (tmp_path / "x").exists(), case
    assert tree_hash(manifest.parent) == before  # the segment --out victim (clinical.csv) included


def test_alias_bomb_refused_fast(tmp_path, cli, cohort):
    manifest, clinical = cohort
    cfg = _write(tmp_path / "bomb.yaml", _bomb(10))
    t0 = time.perf_counter()
    line = assert_one_line_error(cli("validate", "--config", cfg, "--manifest", manifest, "--run-dir",
                                      tmp_path / "r"), "expands to more than")
    assert time.perf_counter() - t0 < 2.0, line
    flow = "[&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)) + "]"  # the same bomb in one --set
    t0 = time.perf_counter()
    assert_one_line_error(cli("validate", "--manifest", manifest, "--run-dir", tmp_path / "r", "--set",
                              f"classification.grids.rf.n_estimators={flow}"),
                          "Override 'classification.grids.rf.n_estimators' expands to more than")
    assert time.perf_counter() - t0 < 2.0
    assert not (tmp_path / "r").exists()


def test_yaml_limits_keep_ordinary_configs():
    """Anchors and aliases within the limits still work; the shipped presets load."""
    from cervirad.config import load_config, parse_yaml

    doc = parse_yaml("a: &x [1, 2]\nb: *x\n", "test")
    assert doc == {"a": [1, 2], "b": [1, 2]}
    for name in ("demo", "paper"):
        load_config(name)


def test_disk_full_and_read_only_reported(tmp_path, cli, cohort, monkeypatch):
    """ENOSPC (and numpy's short write) during a write: one line with the path and the space; a read-only
    file system is called that, not 'Permission denied'."""
    import cervirad.files as files
    import cervirad.rundir as rundir

    manifest, clinical = cohort
    real = files.write_text
    for exc, needle in ((OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
                        (OSError("393216 requested and 196544 written"), "0.4 MB needed"),
                        (OSError(errno.EROFS, "Read-only file system"), "the file system is read-only")):
        def failing(path, text, exc=exc):
            if Path(path).name == "fingerprint.json":
                with files.atomic_path(path):
                    raise exc
            return real(path, text)

        monkeypatch.setattr(files, "write_text", failing)
        run = tmp_path / f"run{needle[:3]}"
        line = assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir",
                                         run), needle, "fingerprint.json")
        assert "MB free there" in line or "read-only" in line
        assert not list(run.rglob("fingerprint*"))  # no half-written file
    monkeypatch.setattr(files, "write_text", real)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == ro and m & os.W_OK
                        else real_access(p, m, **kw))
    monkeypatch.setattr(rundir, "_read_only", lambda p: True)
    assert_one_line_error(cli("validate", "--manifest", manifest, "--run-dir", ro), "(Read-only file system)")


def test_uncaught_enospc_is_exit_2(tmp_path, cli, monkeypatch):
    """A full disk met outside the atomic writers (e.g. a library writing itself) is still one line, exit 2."""
    import cervirad.cli.segmentation as cli_mod  # the preprocess command loads its run with it

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.npy"))

    monkeypatch.setattr(cli_mod, "load_run", full)
    assert_one_line_error(cli("preprocess", "--run-dir", tmp_path / "r"), f"Cannot write '{tmp_path / 'x.npy'}'",
                          "no space left")


# --------------------------------------------------------------------------- A. messages (item 12)
def test_geometry_message_has_plain_numbers():
    from cervirad.io import geometry_mismatch
    from tests.foundation.helpers import volume

    a = volume(np.zeros((4, 8, 8), np.float32), (0.7, 0.7, 4.0))
    b = volume(np.zeros((4, 8, 8), np.float32), (0.9, 0.7, 4.0))
    msg = geometry_mismatch(a, b)
    assert msg == "spacing (0.7, 0.7, 4.0) vs (0.9, 0.7, 4.0)", msg


def test_excel_workbook_says_save_as_csv(tmp_path, cli, cohort):
    manifest, clinical = cohort
    xlsx = _write(tmp_path / "clinical.xlsx", b"PK\x03\x04" + bytes(range(256)) * 4)
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", xlsx, "--run-dir", tmp_path / "r"),
                          "Excel workbook", "CSV UTF-8")


def test_long_id_is_not_echoed(tmp_path, cli, cohort):
    manifest, clinical = cohort
    text = manifest.read_text(encoding="utf-8").replace("P001,", "X" * 1_000_000 + "/,", 1)
    manifest.write_text(text, encoding="utf-8")
    line = assert_one_line_error(cli("validate", "--manifest", manifest, "--run-dir", tmp_path / "r"),
                                 "(1000001 characters)")
    assert len(line) < 1000


def test_unreadable_first_sequence_no_extra_geometry_line(tmp_path, cohort):
    """An unreadable t2w is one problem; the mask is not then compared with the next sequence's grid."""
    import SimpleITK as sitk

    from cervirad.io import Patient
    from cervirad.validate import _check_patient
    from tests.foundation.helpers import volume

    root = manifest = cohort[0].parent
    _write(root / "P000_t2w.nii.gz", b"not a volume")
    sitk.WriteImage(volume(np.zeros((8, 16, 16), np.float32), (1.6, 1.6, 3.0)), str(root / "P000_adc.nii.gz"))
    p = Patient("P000", {"t2w": root / "P000_t2w.nii.gz", "adc": root / "P000_adc.nii.gz"}, root / "P000_mask.nii.gz")
    problems, _, _ = _check_patient(p, ("t2w", "adc"), 1e-3)
    assert len(problems) == 1 and "t2w" in problems[0] and "geometry" not in problems[0], (problems, manifest)


def test_ctrl_c_prints_interrupted(tmp_path, cli, monkeypatch):
    import cervirad.cli.segmentation as cli_mod  # the preprocess command loads its run with it

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "load_run", interrupted)
    code, _, err = cli("preprocess", "--run-dir", tmp_path / "r")
    assert code == 130 and err.strip().splitlines()[-1] == "cervirad: interrupted", err


# --------------------------------------------------------------------------- B. destroyed-file cases
def _ckpt(tmp_path: Path) -> Path:
    from tests.segmentation.test_infer import _checkpoint

    return _checkpoint(tmp_path / "model.pt")


def test_segment_out_is_the_input_folder(tmp_path, cli):
    """Case 1: `segment --input D --out D` replaced the images in D with masks (rc 0)."""
    from tests.segmentation.test_infer import _volume

    model = _ckpt(tmp_path)
    d = tmp_path / "D"
    d.mkdir()
    _volume(d / "case_a.nii.gz", size=(32, 32, 3))
    before = tree_hash(d)
    for extra in ([], ["--force"]):
        assert_one_line_error(cli("segment", "--model", model, "--input", d, "--out", d, *extra),
                              f"segment --out '{d}' holds '{d}', an input of this command", "not even with --force")
    # a manifest elsewhere listing images inside --out: refused once the cases are known, even with --force
    (tmp_path / "m.csv").write_text("patient_id,t2w\ncase_a,D/case_a.nii.gz\n", encoding="utf-8")
    assert_one_line_error(cli("segment", "--model", model, "--input", tmp_path / "m.csv", "--out", d, "--force"),
                          "an input of this command")
    assert tree_hash(d) == before
    # a folder with the user's own files: refused without --force; with it, written beside them
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    assert_one_line_error(cli("segment", "--model", model, "--input", d, "--out", mine),
                          "holds files cervirad did not write ('notes.txt')", "--force")
    code, _, err = cli("segment", "--model", model, "--input", d, "--out", mine, "--force")
    assert code == 0, err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep" and (mine / "case_a.nii.gz").is_file()
    out = tmp_path / "out"  # a new folder is marked as cervirad's: a rerun writes into it without --force
    for _ in range(2):
        code, _, err = cli("segment", "--model", model, "--input", d, "--out", out)
        assert code == 0, err
    assert json.loads((out / "segment.json").read_text(encoding="utf-8"))["cases"] == ["case_a.nii.gz"]
    assert tree_hash(d) == before


def _fake_finished_run(dev: Path) -> Path:
    """Just enough of a finished run-all for evaluate to reach its output folder."""
    from cervirad.config import load_config

    cfg = load_config(None, ["data.sequences=[t2w]", "segmentation.input_sequences=[t2w]"])
    (dev / "segmentation").mkdir(parents=True)
    (dev / "classification").mkdir()
    (dev / "segmentation" / "model.pt").write_bytes(b"x")
    (dev / "classification" / "model.joblib").write_bytes(b"x")
    (dev / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    (dev / "run.json").write_text(json.dumps({"stages": {"train-seg": {"status": "done"},
                                                         "classify": {"status": "done"}}}), encoding="utf-8")
    return dev


def test_evaluate_out_holds_the_cohort_and_its_masks(tmp_path, cli, cohort):
    """Case 2: `evaluate ... --out B` with the manual masks at B/masks/<id>.nii.gz overwrote all of them."""
    manifest, clinical = cohort
    b = manifest.parent
    (b / "masks").mkdir()
    for i in range(4):
        (b / f"P00{i}_mask.nii.gz").rename(b / "masks" / f"P00{i}.nii.gz")
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("_mask.nii.gz", ".nii.gz")
                        .replace(",P00", ",masks/P00").replace("masks/P00", "P00", 0), encoding="utf-8")
    text = manifest.read_text(encoding="utf-8").splitlines()
    manifest.write_text("\n".join([text[0]] + [ln.replace(",masks/P00", ",P00", 1) for ln in text[1:]]) + "\n",
                        encoding="utf-8")
    assert "masks/P000.nii.gz" in manifest.read_text(encoding="utf-8")
    dev = _fake_finished_run(tmp_path / "dev")
    before = tree_hash(b)
    for extra in ([], ["--force"]):
        assert_one_line_error(cli("evaluate", "--run", dev, "--manifest", manifest, "--clinical", clinical, "--out", b,
                                  *extra), f"evaluate --out '{b}' holds", "an input of this command")
    # the manifest elsewhere, the masks still in --out: refused before anything is written there
    other = tmp_path / "elsewhere.csv"
    other.write_text(manifest.read_text(encoding="utf-8").replace(",P00", f",{b}/P00").replace(",masks/", f",{b}/masks/"),
                     encoding="utf-8")
    assert_one_line_error(cli("evaluate", "--run", dev, "--manifest", other, "--out", b, "--force"),
                          "an input of this command")
    assert tree_hash(b) == before and not (b / "run.json").exists()


def test_force_never_deletes_outside_the_run(tmp_path, cli, cohort):
    """Case 3: --force deleted every path a run.json listed as an output, '../../victim' and absolute ones too."""
    manifest, clinical = cohort
    victim = tmp_path / "victim_dir"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine", encoding="utf-8")
    run = tmp_path / "a" / "b" / "run"
    run.mkdir(parents=True)
    before = tree_hash(victim)
    for rel in ("../../../victim_dir", str(victim), "masks/../../../../victim_dir"):
        (run / "run.json").write_text(json.dumps({"identity": {"kind": "table", "source": "x"}, "stages": {
            "classify": {"status": "done", "outputs": {"classification": None, rel: "0"}}}}), encoding="utf-8")
        assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run,
                                  "--force"), f"names output '{rel}', which resolves outside the run folder",
                              "nothing was deleted")
        assert tree_hash(victim) == before


def test_lock_symlink_is_not_written_through(tmp_path, cli, cohort):
    """Case 4: a `.lock` that is a symlink to a user file: the file's content became a pid."""
    manifest, clinical = cohort
    victim = tmp_path / "thesis.txt"
    victim.write_text("chapter 1\n", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"stages": {}}', encoding="utf-8")
    (run / ".lock").symlink_to(victim)
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run),
                          "/.lock' is a symbolic link")
    assert victim.read_text(encoding="utf-8") == "chapter 1\n" and (run / ".lock").is_symlink()


def test_partial_symlink_is_not_followed(tmp_path, cli, cohort):
    """Case 5: a `.partial` that is a symlink to a user folder: its validate/ subfolder was deleted."""
    manifest, clinical = cohort
    user = tmp_path / "user"
    (user / "validate").mkdir(parents=True)
    (user / "validate" / "data.txt").write_text("keep", encoding="utf-8")
    (user / "preprocess").mkdir()
    run = tmp_path / "run"
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run)
    assert code == 0, err
    (run / ".partial").symlink_to(user, target_is_directory=True)
    before = tree_hash(user)
    for args in (["validate", "--force"], ["preprocess"]):
        assert_one_line_error(cli(args[0], "--manifest" if args[0] == "validate" else "--run-dir",
                                  *([manifest, "--clinical", clinical, "--run-dir", run] if args[0] == "validate"
                                    else [run]), *args[1:]), ".partial' is a symbolic link")
        assert tree_hash(user) == before and (user / "validate" / "data.txt").is_file()
    # a stage folder replaced by a link to the user's folder: the link is replaced, the folder untouched
    (run / ".partial").unlink()
    (run / "fingerprint.json").unlink()
    (run / "fingerprint.json").symlink_to(user / "validate" / "data.txt")
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run)
    assert code == 0, err
    assert not (run / "fingerprint.json").is_symlink() and tree_hash(user) == before


def test_run_name_cannot_leave_runs_root(tmp_path, cli, cohort, monkeypatch):
    """Case 6: `--set run.name=/tmp/x` wrote the run to /tmp/x; `../..` escaped runs_root."""
    manifest, clinical = cohort
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("keep", encoding="utf-8")
    before = tree_hash(tmp_path)
    for name in (str(tmp_path / "x"), "../..", "..", ".hidden", "a/b"):
        assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--set",
                                  f"run.runs_root={tmp_path / 'runs'}", "--set", f"run.name={name}"),
                              "'run.name': expected a plain name")
    assert tree_hash(tmp_path) == before and not (tmp_path / "runs").exists()


def test_user_files_in_stage_folders_are_refused(tmp_path, cli, cohort):
    """Case 7: `predict --out R/classification/x.csv` and `evaluate --out R/classification/ext` were accepted,
    then deleted by the next run-all. Decision: the stage folders are cervirad's, such outputs are refused at
    write time (a path in the run folder but outside its entries, e.g. R/mine/, is allowed and left alone)."""
    manifest, clinical = cohort
    run = tmp_path / "R"
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run)
    assert code == 0, err
    table = tmp_path / "features.csv"
    table.write_text("patient_id,f1\nP1,1.0\n", encoding="utf-8")
    dev = _fake_finished_run(tmp_path / "dev")
    before = tree_hash(run)
    cases = [
        (["predict", "--model", dev, "--features", table, "--out", run / "classification" / "x.csv"],
         "predict --out"),
        (["evaluate", "--run", dev, "--manifest", manifest, "--out", run / "classification" / "ext"], "Run folder"),
        (["classify", "--features", table, "--label-column", "y", "--out", run / "features" / "t"], "Run folder"),
        (["demo-data", "--out", run / "cohort" / "more", "--patients", "10"], "demo-data --out"),
        (["segment", "--model", tmp_path / "m.pt", "--input", table, "--out", run / "masks" / "mine"],
         "segment --out"),
    ]
    for args, flag in cases:
        assert_one_line_error(cli(*args), flag, f"lies inside run folder '{run}'", "choose a path outside it")
    assert tree_hash(run) == before


def test_run_dir_with_user_files(tmp_path, cli, cohort):
    """The one rule for run folders: a folder holding files cervirad did not write needs --force; the user's
    files are then left as they are."""
    manifest, clinical = cohort
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "draft.docx").write_bytes(b"\x00draft")
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", mine),
                          "holds files cervirad did not write ('draft.docx')", "--force")
    assert sorted(p.name for p in mine.iterdir()) == ["draft.docx"]
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", mine, "--force")
    assert code == 0, err
    assert (mine / "draft.docx").read_bytes() == b"\x00draft" and (mine / "fingerprint.json").is_file()
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", mine)
    assert code == 0, err  # now marked as cervirad's (run.json)


def test_spacing_refused_by_the_resampled_grid(tmp_path, cli, cohort):
    """preprocess.spacing=[0.001]*3 was an allocation failure (exit 1): the voxel count of the resampled grid
    is checked before anything is allocated."""
    manifest, clinical = cohort
    run = tmp_path / "run"
    code, _, err = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", run)
    assert code == 0, err
    line = assert_one_line_error(cli("preprocess", "--run-dir", run, "--set", "preprocess.spacing=[0.001,0.001,0.001]"),
                                 "Case 'P00", "preprocess.spacing (0.001, 0.001, 0.001) mm", "M voxels",
                                 "use a coarser spacing")
    assert "26 x 26 x 24 mm" in line, line
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["stages"]["preprocess"]["status"] == "failed"
    assert not (run / "preprocess").exists()


# --------------------------------------------------------------------------- item 10: undefined AUC
def _scored(truth: list, probs: list[list[float]]) -> dict:
    import pandas as pd

    from cervirad.pathology import LABEL
    from cervirad.config import load_config
    from cervirad.external import score_predictions

    card = {"class_codes": [0, 1, 2], "id_column": "patient_id", "model": "rf"}
    pred = pd.DataFrame({"patient_id": [f"E{i}" for i in range(len(truth))], LABEL: truth,
                         "predicted": [int(np.argmax(p)) for p in probs]})
    for j in range(3):
        pred[f"prob_{j}"] = [p[j] for p in probs]
    return score_predictions(pred, card, load_config(None, ["classification.bootstrap=50"]))


def test_external_auc_undefined_when_no_scored_class_has_both_sides():
    """All external classes unseen in development: macro AUC was 0.500 [0.5, 0.5]; it is undefined, and why."""
    m = _scored([5, 5, 6, 6, 6], [[0.6, 0.3, 0.1]] * 5)
    auc = m["rf.auc_macro"]
    assert auc["value"] is None and auc["ci_low"] is None and auc["ci_high"] is None
    assert "unseen in development, so without a score: 5, 6" in m["auc_undefined"]["macro"]
    assert m["auc_undefined"]["0"].endswith("(no positives)") and m["best.auc_macro"]["value"] is None
    one = _scored([1, 1, 1], [[0.2, 0.7, 0.1]] * 3)  # one class only: no negatives
    assert one["rf.auc_macro"]["value"] is None and "no negatives" in one["auc_undefined"]["1"]
    ok = _scored([0, 1, 1, 0], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    assert ok["rf.auc_macro"]["value"] == 1.0 and "macro" not in ok["auc_undefined"]


# --------------------------------------------------------------------------- C. clean exit
def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_with_a_killed_parent(tmp_path):
    """After kill -9 of cervirad its loky workers stayed alive for minutes; now a watchdog ends them at once."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from joblib import Parallel, delayed
        from cervirad.parallel import watch_workers

        def pid(_):
            time.sleep(0.1)
            return os.getpid()

        watch_workers()
        pids = set(Parallel(n_jobs=2)(delayed(pid)(i) for i in range(4)))
        pids |= set(Parallel(n_jobs=2, backend="loky")(delayed(pid)(i) for i in range(4)))
        print(sorted(pids), flush=True)
        time.sleep(120)
    """), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    workers = json.loads(proc.stdout.readline())
    assert workers and proc.pid not in workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    while any(_alive(p) for p in workers) and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left and time.monotonic() - t0 < 5


def test_sigterm_marks_the_stage_interrupted(tmp_path, cohort):
    """SIGTERM left the stage 'running'; now it is 'interrupted' as with Ctrl-C, with one line and exit 143."""
    manifest, clinical = cohort
    run = tmp_path / "run"
    script = tmp_path / "term.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        import cervirad.validate as v
        from cervirad.cli import main

        def slow(*a, **k):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        v.validate_cohort = slow
        sys.argv = ["cervirad", "validate", "--manifest", {str(manifest)!r}, "--run-dir", {str(run)!r}]
        main()
    """), encoding="utf-8")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert res.returncode == 143, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "cervirad: interrupted (SIGTERM)", res.stderr
    rec = json.loads((run / "run.json").read_text(encoding="utf-8"))["stages"]["validate"]
    assert rec["status"] == "interrupted" and not (run / ".lock").exists() and not (run / ".partial").exists()
