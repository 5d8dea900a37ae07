"""Small seeded cohorts written to tmp folders for foundation tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk


def volume(arr: np.ndarray, spacing=(0.8, 0.8, 3.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    return img


def write_small_cohort(root: Path, n: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """n patients: t2w 8x32x32 float, a binary cubic lesion mask, clinical table with pathology bits."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, clin = [], []
    for i in range(n):
        pid = f"P{i:03d}"
        img = rng.normal(100, 10, (8, 32, 32)).astype(np.float32)
        mask = np.zeros((8, 32, 32), np.uint8)
        mask[3:6, 10:18, 12:20] = 1
        sitk.WriteImage(volume(img), str(root / f"{pid}_t2w.nii.gz"))
        sitk.WriteImage(volume(mask), str(root / f"{pid}_mask.nii.gz"))
        rows.append({"patient_id": pid, "t2w": f"{pid}_t2w.nii.gz", "mask": f"{pid}_mask.nii.gz"})
        clin.append({"patient_id": pid, "age": 50 + i, "hpv_status": "positive", "figo_stage": "IB2",
                     "lymph_node_metastasis": 0, "lymphovascular_invasion": 1, "invasion_depth_cm": 1.2,
                     "chemotherapy": 0, "radiotherapy": 1, "large_cell": i % 2, "non_keratinizing": 1,
                     "adenocarcinoma": 0})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    pd.DataFrame(clin).to_csv(root / "clinical.csv", index=False)
    return root / "manifest.csv", root / "clinical.csv"
