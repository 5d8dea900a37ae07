"""A cohort of images and masks with no clinical table, two sequences on different grids and
orientations, fields of view of several sizes: validate, preprocess, train-seg, segment and
extract-features work; classify and run-all say in one line that they need labels (slow)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

pytestmark = pytest.mark.slow


def write_cohort(root: Path, n: int = 10) -> Path:
    """n patients, 64 x (64..80) x 8 T2W-like volumes with one ellipsoid lesion of varied size; no clinical table."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):  # fields of view differ between patients: whole slices of several sizes
        pid = f"S{i:02d}"
        z, y, x = np.meshgrid(np.arange(8), np.arange(64 + 8 * (i % 3)), np.arange(64), indexing="ij")
        r = 4 + i % 5
        cy, cx = rng.integers(20, 44, 2)
        mask = (((y - cy) / r) ** 2 + ((x - cx) / r) ** 2 + ((z - 4) / 2.5) ** 2 <= 1).astype(np.uint8)
        img = rng.normal(100, 8, mask.shape).astype(np.float32) + 60 * mask
        for arr, name in ((img, "t2w"), (mask, "mask")):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing((0.8, 0.8, 3.0))
            sitk.WriteImage(im, str(root / f"{pid}_{name}.nii.gz"))
            if name == "t2w":  # an ADC-like second sequence: coarser grid, stored coronal (flipped axes)
                adc = sitk.Resample(im, [32, arr.shape[1] // 2, 8], sitk.Transform(), sitk.sitkLinear,
                                    im.GetOrigin(), (1.6, 1.6, 3.0), im.GetDirection(), 0.0, sitk.sitkFloat32)
                adc = sitk.Flip(sitk.PermuteAxes(-adc + 300, [0, 2, 1]), [True, False, True])
                sitk.WriteImage(adc, str(root / f"{pid}_adc.nii.gz"))
        rows.append({"patient_id": pid, "t2w": f"{pid}_t2w.nii.gz", "adc": f"{pid}_adc.nii.gz",
                     "mask": f"{pid}_mask.nii.gz"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cervirad.cli", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", timeout=600, env={**__import__("os").environ, "TQDM_DISABLE": "1"})


def test_images_and_masks_only(tmp_path):
    manifest = write_cohort(tmp_path / "cohort")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"imageType": {"Original": {}}, "featureClass": {"shape": None, "firstorder": None},
                                      "setting": {"normalize": True, "binCount": 16, "label": 1}}))
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": "manifest", "manifest": str(manifest), "sequences": ["t2w", "adc"]},
        "preprocess": {"spacing": [0.8, 0.8, 3.0], "slice_size": 64},
        "segmentation": {"epochs": 1, "lstm_hidden": 8, "train_crop": 32, "batch_size": 4, "bootstrap": 20,
                         "n_overlays": 1, "input_sequences": ["t2w", "adc"],
                         # 8 development patients: the plan would train a 5-fold ensemble, and mirroring is 4x
                         # the inference; folds and mirroring have their own tests (test_ensemble.py, test_tta.py)
                         "plan_keep": ["segmentation.folds"], "tta_mirror": False},
        "features": {"radiomics_params": str(params)},
        "execution": {"n_jobs": 1},
    }))
    run = tmp_path / "run"
    res = cli("train-seg", "--config", config, "--run-dir", run)
    assert res.returncode == 0, res.stderr[-3000:]
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    assert splits["stratified_by"] == "lesion_volume_tertile" and all(splits[k] for k in ("train", "val", "test"))
    metrics = json.loads((run / "segmentation" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_patients"] == len(splits["test"]) and "postprocessing" in metrics
    assert np.load(run / "preprocess" / "slices" / "S00_image.npy", mmap_mode="r").shape[1] == 2  # T2W + ADC
    res = cli("segment", "--model", run / "segmentation" / "model.pt", "--input", manifest, "--out", tmp_path / "pred")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sitk.ReadImage(str(tmp_path / "pred" / "S00.nii.gz")).GetSize() == (64, 64, 8)
    shapes = {np.load(f, mmap_mode="r").shape[2:] for f in (run / "preprocess" / "slices").glob("*_image.npy")}
    assert len(shapes) == 3  # validation and test mix slice sizes
    res = cli("extract-features", "--run-dir", run)
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_parquet(run / "features" / "features.parquet")
    assert len(table) == 10 and "Pathologic_typing" not in table and not any(c.startswith("clin_") for c in table)
    for command in ("classify", "run-all"):
        res = cli(command, "--run-dir", run)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error")]
        assert res.returncode == 2 and len(errors) == 1 and "need the pathology labels" in errors[0], res.stderr
