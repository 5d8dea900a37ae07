"""The extract-features stage on the tiny demo run: table shape, counts, cache, errors, dask, CLI."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from cervirad.config import with_overrides
from cervirad.errors import InputError
from cervirad.io import read_clinical
from cervirad.pathology import LABEL, pathologic_typing
from cervirad.rundir import RunDir
from cervirad.splits import load_splits, split_of
from tests.conftest import REPO

PAPER_COUNTS = {"clinical": 8, "shape": 14, "firstorder": 162, "glcm": 216, "glrlm": 144, "glszm": 144,
                "gldm": 126, "ngtdm": 45, "histogram": 9, "total": 868}


def make_run(tmp_path, tiny_cfg, tiny_run, *overrides):
    """A run over the tiny run's cohort (as a manifest cohort) with its splits.json."""
    cohort = tiny_run.path / "cohort"
    cfg = with_overrides(tiny_cfg, ["data.source=manifest", f"data.manifest={cohort / 'manifest.csv'}",
                                   f"data.clinical={cohort / 'clinical.csv'}", *overrides])
    run = RunDir(tmp_path, cfg)
    shutil.copy(tiny_run.path / "splits.json", run.path / "splits.json")
    return cfg, run


def extract(cfg, run, masks="manual"):
    """The features stage function on its own (the orchestrator's rules are tested in tests/pipeline)."""
    from cervirad.pipeline import configured_cohort
    from cervirad.features.stage import run_stage

    from cervirad.stages import stage_inputs

    name = "features" if masks == "manual" else "features-predicted"
    with run.stage(name) as st:
        run_stage(cfg, stage_inputs(name, run.path), configured_cohort(cfg, run.path), st, masks)
    return run.features_dir(masks)


@pytest.fixture
def fast_params(tmp_path):
    """A small preset (Original image; shape + first order) for tests about the stage's mechanics."""
    p = tmp_path / "fast.yaml"
    p.write_text(yaml.safe_dump({"imageType": {"Original": {}}, "featureClass": {"shape": None, "firstorder": None},
                                 "setting": {"normalize": True, "binCount": 16, "label": 1}}))
    return p


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, tiny_cfg, tiny_run):
    cfg, run = make_run(tmp_path_factory.mktemp("feat_paper"), tiny_cfg, tiny_run)
    out = extract(cfg, run)
    return cfg, run, out


def test_paper_table_has_868_columns(paper_run):
    cfg, run, out = paper_run
    assert out == run.path / "features"
    table = pd.read_parquet(out / "features.parquet")
    assert table.shape == (12, 3 + 868)
    assert list(table.columns[:3]) == ["patient_id", "split", LABEL]
    assert json.loads((out / "column_counts.json").read_text(encoding="utf-8")) == PAPER_COUNTS
    for name in ("original_glcm_Contrast", "wavelet-LLL_firstorder_Mean", "wavelet-HHH_ngtdm_Busyness",
                 "log-sigma-2-0-mm-3D_glszm_ZoneEntropy", "exponential_gldm_DependenceEntropy", "hist_median",
                 "clin_figo_stage"):
        assert name in table.columns
    assert not any(c.startswith("wavelet-LLH") for c in table.columns)
    feats = table.iloc[:, 3:]
    assert not feats.isna().all().any()
    csv = pd.read_csv(out / "features.csv")
    assert list(csv.columns) == list(table.columns) and len(csv) == 12


def test_split_and_label_match_the_run(paper_run):
    cfg, run, out = paper_run
    table = pd.read_parquet(out / "features.parquet").set_index("patient_id")
    splits = split_of(load_splits(run.path))
    assert all(table.loc[pid, "split"] == part for pid, part in splits.items())
    y = pathologic_typing(read_clinical(cfg.data.clinical), cfg.data)
    assert (table[LABEL] == y.loc[table.index]).all()


def test_side_files(paper_run):
    _, _, out = paper_run
    cols = json.loads((out / "columns.json").read_text(encoding="utf-8"))
    assert cols["excluded_from_predictors"] == ["clin_chemotherapy", "clin_radiotherapy"]
    assert len(cols["predictors"]) == 866 and "clin_age" in cols["predictors"]
    diag = pd.read_csv(out / "diagnostics.csv")
    assert len(diag) == 12 and "diagnostics_Versions_PyRadiomics" in diag.columns
    assert pd.read_csv(out / "errors.csv").empty
    table = pd.read_parquet(out / "features.parquet")
    assert len(table) == 12 and set(cols["predictors"]) <= set(table.columns)
    assert not set(cols["excluded_from_predictors"]) & set(cols["predictors"])


def test_rerun_is_served_from_the_cache(paper_run):
    cfg, run, out = paper_run
    before = pd.read_parquet(out / "features.parquet")
    extract(cfg, run)
    assert run.stage_record("features")["n_cached"] == 12
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "features.parquet"))
    assert len(list((run.path / "cache" / "features").glob("*.json"))) == 12


def _write_mask(arr: np.ndarray, ref: sitk.Image, path, spacing=None):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(ref)
    if spacing:
        img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def test_predicted_masks_and_failing_cases(tmp_path, tiny_cfg, tiny_run, fast_params):
    cfg, run = make_run(tmp_path, tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}")
    manifest = pd.read_csv(tiny_run.path / "cohort" / "manifest.csv")
    ids = manifest["patient_id"].tolist()
    ref = sitk.ReadImage(str(tiny_run.path / "cohort" / manifest["mask"][0]))
    good = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_run.path / "cohort" / manifest["mask"][1])))
    one = np.zeros_like(good)
    one[10, 100, 100] = 1
    masks = run.path / "masks"
    _write_mask(good, ref, masks / f"{ids[1]}.nii.gz")
    _write_mask(np.zeros_like(good), ref, masks / f"{ids[2]}.nii.gz")
    _write_mask(one, ref, masks / f"{ids[3]}.nii.gz")
    _write_mask(good, ref, masks / f"{ids[4]}.nii.gz", spacing=(0.9, 0.7, 4.0))
    out = extract(cfg, run, masks="predicted")
    assert out == run.path / "features" / "predicted"
    table = pd.read_parquet(out / "features.parquet")
    assert table["patient_id"].tolist() == [ids[1]]
    errors = pd.read_csv(out / "errors.csv").set_index("patient_id")["message"]
    assert set(errors.index) == {ids[2], ids[3], ids[4]}
    assert f"Mask of case '{ids[2]}' has no voxel with label 1" in errors[ids[2]]
    assert f"Mask of case '{ids[3]}' has a single voxel of label 1" in errors[ids[3]]
    assert f"Image/mask geometry mismatch for case '{ids[4]}': t2w vs mask spacing" in errors[ids[4]]
    assert not (run.path / "features" / "features.parquet").exists()  # manual output untouched


def test_no_predicted_masks_is_an_error(tmp_path, tiny_cfg, tiny_run, fast_params):
    cfg, run = make_run(tmp_path, tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}")
    with pytest.raises(InputError, match="predicted masks.*run `cervirad train-seg` first"):
        extract(cfg, run, masks="predicted")


def test_several_sequences_are_prefixed(tmp_path, tiny_cfg, tiny_run, fast_params):
    cfg, run = make_run(tmp_path, tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}",
                        "features.sequences=[t2w, adc]")
    out = extract(cfg, run)
    table = pd.read_parquet(out / "features.parquet")
    counts = json.loads((out / "column_counts.json").read_text(encoding="utf-8"))
    assert counts["shape"] == 28 and counts["firstorder"] == 36 and counts["histogram"] == 18
    assert {"t2w_original_firstorder_Mean", "adc_original_firstorder_Mean", "adc_hist_mean", "clin_age"} \
        <= set(table.columns)
    # ADC (1.4 mm grid) was resampled onto the T2W mask grid: the lesion is darker on ADC than on T2W
    assert (table["adc_original_firstorder_Mean"] != table["t2w_original_firstorder_Mean"]).all()


def test_dask_cluster_gives_the_same_table(tmp_path, tiny_cfg, tiny_run, fast_params):
    from distributed import LocalCluster

    cfg, run = make_run(tmp_path / "loky", tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}")
    loky = pd.read_parquet(extract(cfg, run) / "features.parquet")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        cfg, run = make_run(tmp_path / "dask", tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}",
                            "execution.backend=dask", f"execution.scheduler_address={cluster.scheduler_address}",
                            "features.cache=false")
        dask = pd.read_parquet(extract(cfg, run) / "features.parquet")
    pd.testing.assert_frame_equal(loky, dask)


def test_missing_clinical_column(tmp_path, tiny_cfg, tiny_run, fast_params):
    cfg, run = make_run(tmp_path, tiny_cfg, tiny_run, f"features.radiomics_params={fast_params}",
                        "features.clinical_columns.age=age_years")
    with pytest.raises(InputError, match=r"lacks column 'age_years' \(age\)"):
        extract(cfg, run)


def test_cli_bad_params_exit_2(tmp_path, tiny_cfg, tiny_run):
    bad = tmp_path / "bad.yaml"
    bad.write_text("imageType: {Original: {}}\nsetting: {binCount: 32, colour: red}\n")
    cohort = tiny_run.path / "cohort"
    res = subprocess.run([str(REPO / ".venv" / "bin" / "cervirad"), "extract-features", "--config",
                          str(REPO / "configs" / "demo.yaml"), "--run-dir", str(tmp_path / "run"),
                          "--set", f"features.radiomics_params={bad}", "--set", "data.source=manifest",
                          "--set", f"data.manifest={cohort / 'manifest.csv'}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("cervirad: error")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "bad.yaml' is invalid" in lines[0] and "colour" in lines[0]
