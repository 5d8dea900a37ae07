"""Every bad input exits 2 with one line naming the case (issue: foundation, 'Bad input')."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from .helpers import volume, write_small_cohort


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cervirad.cli", *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          cwd=cwd, timeout=120)


def assert_one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("cervirad: error")]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def cohort(tmp_path):
    return write_small_cohort(tmp_path / "cohort", n=4)


def run_validate(tmp_path, manifest, clinical=None):
    args = ["validate", "--manifest", manifest, "--run-dir", tmp_path / "run"]
    if clinical is not None:
        args += ["--clinical", clinical]
    return cli(*args)


def test_valid_cohort_writes_fingerprint(tmp_path, cohort):
    manifest, clinical = cohort
    res = run_validate(tmp_path, manifest, clinical)
    assert res.returncode == 0, res.stderr
    fp = pd.read_json(tmp_path / "run" / "fingerprint.json", typ="series")
    assert fp["n_patients"] == 4
    assert fp["class_counts"] == {"2": 2, "6": 2}
    assert fp["lesion_volume_ml"]["min"] > 0


def test_missing_file(tmp_path, cohort):
    manifest, clinical = cohort
    (manifest.parent / "P001_t2w.nii.gz").unlink()
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Missing t2w file for case 'P001'")
    assert not (tmp_path / "run" / "fingerprint.json").exists()


def test_corrupt_file(tmp_path, cohort):
    manifest, clinical = cohort
    (manifest.parent / "P002_t2w.nii.gz").write_bytes(b"garbage")
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Unreadable t2w for case 'P002'")


def test_non_binary_mask(tmp_path, cohort):
    manifest, clinical = cohort
    m = np.zeros((8, 32, 32), np.uint8)
    m[2:4, 5:9, 5:9] = 2
    m[5, 5, 5] = 1
    sitk.WriteImage(volume(m), str(manifest.parent / "P000_mask.nii.gz"))
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Non-binary mask for case 'P000'", "binarise")
    # multi-label masks: data.mask_label picks the lesion's label
    for pid in ("P001", "P002", "P003"):
        path = manifest.parent / f"{pid}_mask.nii.gz"
        other = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) * 2
        other[0, 0, 0] = 1  # another structure's label
        sitk.WriteImage(volume(other), str(path))
    res = cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "run2",
              "--set", "data.mask_label=2")
    assert res.returncode == 0, res.stderr
    import json

    fp = json.loads((tmp_path / "run2" / "fingerprint.json").read_text(encoding="utf-8"))
    p000 = next(r for r in fp["patients"] if r["id"] == "P000")
    assert p000["lesion_ml"] == round(2 * 4 * 4 * 0.8 * 0.8 * 3.0 / 1000, 4)
    assert_one_line_error(cli("validate", "--manifest", manifest, "--clinical", clinical, "--run-dir", tmp_path / "r3",
                              "--set", "data.mask_label=7"), "no voxel with data.mask_label 7", "values {0, 1, 2}")


def test_empty_mask(tmp_path, cohort):
    manifest, clinical = cohort
    sitk.WriteImage(volume(np.zeros((8, 32, 32), np.uint8)), str(manifest.parent / "P003_mask.nii.gz"))
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Empty mask for case 'P003'")


def test_geometry_mismatch(tmp_path, cohort):
    manifest, clinical = cohort
    m = np.zeros((8, 32, 32), np.uint8)
    m[3:5, 5:9, 5:9] = 1
    sitk.WriteImage(volume(m, (0.8, 0.8, 4.0)), str(manifest.parent / "P001_mask.nii.gz"))
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "geometry mismatch for case 'P001'",
                          "spacing")


def test_duplicate_id(tmp_path, cohort):
    manifest, clinical = cohort
    df = pd.read_csv(manifest)
    pd.concat([df, df.iloc[[1]]]).to_csv(manifest, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Duplicate patient id 'P001'")


def test_patient_without_clinical_row(tmp_path, cohort):
    manifest, clinical = cohort
    pd.read_csv(clinical).iloc[:3].to_csv(clinical, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Patient 'P003' has no row in clinical table")


def test_invalid_pathology_value(tmp_path, cohort):
    manifest, clinical = cohort
    df = pd.read_csv(clinical)
    df.loc[2, "large_cell"] = 3
    df.to_csv(clinical, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical),
                          "Invalid pathology value for case 'P002'", "expected 0 or 1")


def test_missing_pathology_column(tmp_path, cohort):
    manifest, clinical = cohort
    pd.read_csv(clinical).drop(columns="adenocarcinoma").to_csv(clinical, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "lacks pathology column 'adenocarcinoma'")


def test_manifest_without_id_column(tmp_path, cohort):
    manifest, clinical = cohort
    pd.read_csv(manifest).rename(columns={"patient_id": "case"}).to_csv(manifest, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "has no id column 'patient_id'")


def test_2d_image(tmp_path, cohort):
    manifest, clinical = cohort
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 32), np.float32)), str(manifest.parent / "P000_t2w.nii.gz"))
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Wrong dimension for t2w of case 'P000'")


def test_unknown_config_key_and_wrong_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segmentation:\n  epoch: 3\n")
    assert_one_line_error(cli("preprocess", "--config", bad, "--run-dir", tmp_path / "r"),
                          "Unknown config key 'segmentation.epoch'")
    bad.write_text("run:\n  seed: many\n")
    assert_one_line_error(cli("preprocess", "--config", bad, "--run-dir", tmp_path / "r"), "'run.seed'")
    assert not (tmp_path / "r").exists()


def test_failed_stage_writes_nothing_but_its_error(tmp_path, cohort):
    import json

    manifest, clinical = cohort
    (manifest.parent / "P001_t2w.nii.gz").unlink()
    run_validate(tmp_path, manifest, clinical)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["config.yaml", "run.json"]
    rec = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))["stages"]["validate"]
    assert rec["status"] == "failed" and "P001" in rec["error"]


def test_help_is_fast_and_lists_commands():
    import time

    t = time.perf_counter()
    res = cli("--help")
    assert res.returncode == 0 and "preprocess" in res.stdout and "validate" in res.stdout
    code = "import sys, cervirad.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('torch','radiomics','sklearn','xgboost','matplotlib','SimpleITK')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8").stdout.strip()
    assert out == "[]", f"heavy modules imported at CLI start-up: {out}"
    assert time.perf_counter() - t < 60


@pytest.mark.parametrize("damage", ["cut_400_bytes", "cut_half", "nan", "inf"])
def test_damaged_volume_is_caught(tmp_path, cohort, damage):
    """SimpleITK reads a truncated NIfTI as zeros and stored NaN/inf as 0: validate reads the bytes."""
    manifest, clinical = cohort
    path = manifest.parent / "P003_t2w.nii.gz"
    if damage.startswith("cut"):
        data = path.read_bytes()
        path.write_bytes(data[:400] if damage == "cut_400_bytes" else data[: len(data) // 2])
        needle = "damaged or truncated gzip stream"
    else:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        arr[2, 3, 4] = np.nan if damage == "nan" else np.inf
        sitk.WriteImage(volume(arr), str(path))
        needle = "Non-finite voxels in t2w of case 'P003': 1 NaN/inf"
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "'P003'", needle)
    assert not (tmp_path / "run" / "fingerprint.json").exists()


def test_every_problem_is_listed_and_recorded(tmp_path, cohort):
    import json

    manifest, clinical = cohort
    for pid in ("P000", "P001", "P002"):
        (manifest.parent / f"{pid}_t2w.nii.gz").unlink()
    res = run_validate(tmp_path, manifest, clinical)
    assert_one_line_error(res, "Missing t2w file for case 'P000'", "+2 more problem(s)")
    assert all(f"Missing t2w file for case '{pid}'" in res.stderr for pid in ("P001", "P002"))
    rec = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))["stages"]["validate"]
    assert len(rec["problems"]) == 3


def test_a_single_pathology_category_is_refused_at_validate(tmp_path, cohort):
    manifest, clinical = cohort
    df = pd.read_csv(clinical)
    df["large_cell"] = 1
    df.to_csv(clinical, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "Every patient has pathology category 6")


def test_a_missing_clinical_column_fails_at_validate(tmp_path, cohort):
    manifest, clinical = cohort
    pd.read_csv(clinical).drop(columns="figo_stage").to_csv(clinical, index=False)
    assert_one_line_error(run_validate(tmp_path, manifest, clinical), "lacks column 'figo_stage'")
