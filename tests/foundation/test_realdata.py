"""Validate + preprocess real soft-tissue-sarcoma MRI volumes of ../shared/data/ibsi_sts_mri (37 patients;
the pipeline runs on a fixed subset of 8 so the suite does not grow with the folder)."""
import json

import numpy as np
import pandas as pd

from cervirad.config import load_config
from cervirad.pipeline import run_stages
from cervirad.rundir import RunDir

from tests.conftest import require_shared


def test_validate_and_preprocess_real_mri(tmp_path):
    root = require_shared("ibsi_sts_mri")
    every = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("STS_"))
    assert len(every) == 37 and all((p / "MR_T1_image.nii.gz").is_file() and (p / "MR_T1_mask.nii.gz").is_file()
                                    for p in every)
    cases = every[:8]  # STS_001-008: a fixed subset
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"patient_id": [c.name for c in cases],
                  "t1w": [str(c / "MR_T1_image.nii.gz") for c in cases],
                  "mask": [str(c / "MR_T1_mask.nii.gz") for c in cases]}).to_csv(manifest, index=False)
    cfg = load_config(None, [
        "data.source=manifest", f"data.manifest={manifest}", "data.sequences=[t1w]",
        "segmentation.input_sequences=[t1w]", "features.sequences=[t1w]", "preprocess.spacing=[1.0,1.0,3.27]",
        "preprocess.split.stratify=false",
    ])
    run = RunDir(tmp_path / "run")
    run_stages(cfg, run, ["preprocess"])  # no clinical table: a segmentation-only cohort validates
    fp = json.loads(run.fingerprint.read_text(encoding="utf-8"))
    assert fp["n_patients"] == 8 and fp["n_with_mask"] == 8
    assert fp["lesion_volume_ml"]["min"] > 0
    summary = json.loads(run.preprocess_summary.read_text(encoding="utf-8"))
    splits = json.loads((run.path / "splits.json").read_text(encoding="utf-8"))
    ids = splits["train"] + splits["val"] + splits["test"]
    assert sorted(ids) == [c.name for c in cases] and len(set(ids)) == 8
    assert summary["slices_with_lesion"] > 8 * 10
    img = np.load(run.path / "preprocess" / "slices" / "STS_001_image.npy")
    # whole slices at 1 mm: the 174 x 158 x 0.98 mm field of view is kept, nothing cropped
    assert img.shape[1:] == (1, 154, 170)
    meta = json.loads((run.path / "preprocess" / "meta" / "STS_001.json").read_text(encoding="utf-8"))
    assert abs(meta["channel_mean"][0]) < 1e-3 and abs(meta["channel_sd"][0] - 1) < 1e-3
