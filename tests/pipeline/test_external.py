"""`cervirad evaluate`: a finished run applied, unchanged, to another site's cohort (slow; CI runs them)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cervirad.files import file_hash

from .conftest import env, read_json

pytestmark = pytest.mark.slow


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cervirad.cli", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", env=env(), timeout=900)


def frozen_files(run: Path) -> dict[str, str]:
    files = [run / "segmentation" / "model.pt", *sorted((run / "classification").rglob("*.joblib")),
             run / "classification" / "model_card.json"]
    return {str(f.relative_to(run)): file_hash(f) for f in files}


@pytest.fixture(scope="module")
def site_b(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site_b") / "cohort"
    args = ["demo-data", "--out", out, "--patients", "12", "--seed", "11"]
    res = cli(*args, "--site", "B")
    if res.returncode != 0 and "--site" in res.stderr:  # before `demo-data --site` existed: another seed
        res = cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def external(e2e_run, site_b, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, dict]:
    before = frozen_files(e2e_run)
    out = tmp_path_factory.mktemp("ext") / "out"
    res = cli("evaluate", "--run", e2e_run, "--manifest", site_b / "manifest.csv", "--clinical",
              site_b / "clinical.csv", "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res, before


def test_every_external_artifact_and_nothing_refitted(e2e_run, site_b, external):
    out, res, before = external
    assert frozen_files(e2e_run) == before  # the development run's models are untouched
    frozen_params = e2e_run / "features" / "radiomics_params.yaml"  # issue 23: evaluate reads the run's copy
    assert frozen_params.is_file() and str(frozen_params.resolve()) in (out / "config.yaml").read_text(encoding="utf-8")
    n = len(list((site_b).glob("images/*_mask.nii.gz")))
    assert len(list((out / "masks").glob("*.nii.gz"))) == n  # every external patient segmented
    seg = read_json(out / "segmentation" / "metrics.json")
    assert seg["n_segmented"] == n and {"value", "ci_low", "ci_high"} <= set(seg["dice"])
    summary = read_json(out / "classification" / "summary.json")
    card = read_json(e2e_run / "classification" / "model_card.json")
    assert summary["model"] == card["model"] and set(summary["sources"]) == {"predicted", "manual"}
    for name in ("metrics_predicted.json", "metrics.json"):
        m = read_json(out / "classification" / name)
        auc = m[f"{card['model']}.auc_macro"]
        assert auc["value"] is not None and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
        assert "classes_unseen_in_development" in m and "classes_absent_externally" in m
        # the classify stage's one calibration definition, its method read from the model card (issue 23)
        assert m["calibration_method"] == card["calibration"]["method"] and "calibration_definition" in m
        assert f"{card['model']}.calibration_slope" in m and m["n_without_prediction"] >= 0
    shift = read_json(out / "classification" / "shift.json")
    assert shift["cohort"] and isinstance(shift["warnings"], list)
    by_source = shift["features_by_mask_source"]  # manual vs manual, predicted vs predicted: never mixed
    assert set(by_source) == {"manual", "predicted"} and "TEST patients" in by_source["predicted"]["compared"]
    assert {r["item"] for r in shift["cohort"] if r["kind"] == "clinical"} >= {"clin_age", "clin_figo_stage"}
    html = (out / "external_report.html").read_text(encoding="utf-8")
    assert "External validation" in html and "http://" not in html
    info = read_json(out / "run.json")
    assert info["identity"]["kind"] == "external" and info["identity"]["development"] == str(e2e_run.resolve())
    assert all(rec["status"] == "done" for rec in info["stages"].values())
    assert "evaluate:" in res.stdout and "external_report.html" in res.stdout


def test_a_rerun_redoes_nothing_and_no_fit_is_called(e2e_run, site_b, external, monkeypatch):
    """In process, with every fitting entry point made to fail: evaluate runs through (nothing to redo),
    and --force (every stage redone) still fits nothing."""
    from imblearn.pipeline import Pipeline

    from cervirad.pipeline import evaluate_external, external_config
    from cervirad.segmentation.train import Trainer

    def no_fit(*a, **k):
        raise AssertionError("something was fitted during external validation")

    monkeypatch.setattr(Pipeline, "fit", no_fit)
    monkeypatch.setattr(Trainer, "fit", no_fit)
    monkeypatch.setattr("cervirad.classification.search.search", no_fit)
    out = external[0]
    cfg = external_config(e2e_run, {"manifest": str(site_b / "manifest.csv"),
                                    "clinical": str(site_b / "clinical.csv")}, out.name)
    evaluate_external(cfg, e2e_run, out)
    first = {n: r["started"] for n, r in read_json(out / "run.json")["stages"].items()}
    s = evaluate_external(cfg, e2e_run, out, force=True)
    assert s["model"] and read_json(out / "run.json")["stages"]["score-external"]["started"] >= first["score-external"]


def test_added_patients_are_the_only_ones_segmented(e2e_run, site_b, tmp_path):
    rows = (site_b / "manifest.csv").read_text(encoding="utf-8").splitlines()[:6]  # header + 5 patients: 3, then 5
    growing = site_b / "manifest_growing.csv"
    growing.write_text("\n".join(rows[:-2]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    res = cli("evaluate", "--run", e2e_run, "--manifest", growing, "--out", out)  # no labels: predictions only
    assert res.returncode == 0 and "no labels" in res.stdout, res.stderr[-2000:]
    assert not (out / "classification" / "metrics_predicted.json").exists()
    growing.write_text("\n".join(rows) + "\n", encoding="utf-8")  # two patients more
    res = cli("evaluate", "--run", e2e_run, "--manifest", growing, "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    seg = read_json(out / "segmentation" / "metrics.json")
    assert seg["n_segmented"] == len(rows) - 1 and seg["n_reused"] == len(rows) - 3


def test_bad_external_input_is_one_line(e2e_run, site_b, tmp_path):
    res = cli("evaluate", "--run", tmp_path / "nothing", "--manifest", site_b / "manifest.csv", "--out", tmp_path / "o")
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error")]
    assert res.returncode == 2 and len(lines) == 1 and "config.yaml" in lines[0], res.stderr
    # a cohort without the sequence the model reads
    manifest = tmp_path / "m.csv"
    rows = (site_b / "manifest.csv").read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    keep = [i for i, c in enumerate(header) if c != "t2w"]
    manifest.write_text("\n".join(",".join(r.split(",")[i] for i in keep) for r in rows) + "\n", encoding="utf-8")
    for f in ("images",):
        (tmp_path / f).symlink_to(site_b / f)
    res = cli("evaluate", "--run", e2e_run, "--manifest", manifest, "--out", tmp_path / "o2")
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error")]
    assert res.returncode == 2 and len(lines) == 1 and "t2w" in lines[0], res.stderr


def test_harmonize_needs_a_combat_model_and_the_shift_check_names_features(e2e_run, site_b, external, tmp_path):
    """Issue 24: the shift check says which selected features would need harmonisation; --harmonize on a
    model trained without ComBat is one line (the stages before scoring are reused from a copy)."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(external[0], out)
    shift = read_json(out / "classification" / "shift.json")
    flagged = [f for src in shift["features_by_mask_source"].values() for f in src["features"] if f["flag"]]
    if flagged:
        assert any("would need scanner harmonisation" in w for w in shift["warnings"]), shift["warnings"]
    res = cli("evaluate", "--run", e2e_run, "--manifest", site_b / "manifest.csv", "--clinical",
              site_b / "clinical.csv", "--out", out, "--harmonize")
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error")]
    assert res.returncode == 2 and len(lines) == 1 and "trained without ComBat" in lines[0], res.stderr[-2000:]


def test_external_report_in_headless_chromium(external):
    from tests.report.browser import chromium_path, open_report

    chromium_path()
    out = external[0]
    result = open_report(out / "external_report.html", out / "external_screenshot.png")
    assert result["console"] == [] and result["page_errors"] == [] and result["broken"] == []
    assert "External validation" in result["sections"] and "TRIPOD+AI / CLEAR checklist" in result["sections"]
    assert "Frozen model of run" in (out / "external_report.html").read_text(encoding="utf-8")
    json.dumps(result["sections"])
