"""The paper preset on real MRI (../shared/data/ibsi_sts_mri): 868 columns, none all-NaN.

The STS cohort has images and expert masks but no clinical table; the test writes a small
made-up clinical table (pathology bits and the 8 variables) so the full table can be built.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cervirad.config import load_config
from cervirad.files import write_json
from cervirad.rundir import RunDir
from tests.conftest import REPO, require_shared

from .test_stage import extract

SMALLEST = ("STS_019", "STS_008", "STS_002")  # 3.9k, 8.9k and 17k tumour voxels


@pytest.mark.slow
@pytest.mark.realdata
def test_paper_preset_on_real_mri(tmp_path):
    data = require_shared("ibsi_sts_mri")
    pd.DataFrame({"patient_id": SMALLEST,
                  "t2w": [str(data / p / "MR_T1_image.nii.gz") for p in SMALLEST],
                  "mask": [str(data / p / "MR_T1_mask.nii.gz") for p in SMALLEST]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    pd.DataFrame({"patient_id": SMALLEST, "age": [50, 61, 47], "hpv_status": ["positive", "negative", "positive"],
                  "figo_stage": ["IB2", "IIIC1", "IIA1"], "lymph_node_metastasis": [0, 1, 0],
                  "lymphovascular_invasion": [0, 1, 1], "invasion_depth_cm": [1.2, 2.5, 0.8],
                  "chemotherapy": [0, 1, 1], "radiotherapy": [1, 1, 0], "large_cell": [1, 0, 1],
                  "non_keratinizing": [1, 1, 0], "adenocarcinoma": [0, 0, 1]}).to_csv(
        tmp_path / "clinical.csv", index=False)
    cfg = load_config(REPO / "configs" / "paper.yaml", [
        "data.source=manifest", f"data.manifest={tmp_path / 'manifest.csv'}",
        f"data.clinical={tmp_path / 'clinical.csv'}", "data.sequences=[t2w]", "execution.n_jobs=2"])
    run = RunDir(tmp_path / "run", cfg)
    write_json(run.path / "splits.json", {"train": list(SMALLEST[:2]), "val": [], "test": [SMALLEST[2]]})
    out = extract(cfg, run)
    table = pd.read_parquet(out / "features.parquet")
    assert table.shape == (3, 3 + 868)
    assert json.loads((out / "column_counts.json").read_text(encoding="utf-8"))["total"] == 868
    feats = table.iloc[:, 3:]
    assert not feats.isna().all().any()
    assert table.set_index("patient_id").loc["STS_002", "split"] == "test"
