"""train-seg's rescore (a scoring setting changed): every scored metrics.json under segmentation/ gets the
intervals a training with the new setting writes, from its per-patient scores, without predicting again."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cervirad.config import Config, with_overrides
from cervirad.rundir import RunDir
from cervirad.segmentation import write_comparison
from cervirad.segmentation.rescore import SINGLE_FOLD, rescore_stage
from cervirad.segmentation.scoring import write_evaluation
from cervirad.stages import stage_inputs


def _per_patient(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 9
    return pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "dice": rng.uniform(0.3, 0.9, n),
                         "hd95_mm": rng.uniform(1, 20, n), "hausdorff_mm": rng.uniform(2, 30, n),
                         "detected": (rng.uniform(size=n) > 0.2).astype(float),
                         "lesion_diameter_mm": rng.uniform(5, 50, n), "lesion_fallback": [False] * n})


def _train_like(root, n_boot: int, seed: int = 42) -> None:
    """What train-seg writes for a 2-fold CRFE ensemble with a U-Net beside it (scores only)."""
    seg = root / "segmentation"
    fold0 = write_evaluation(_per_patient(0), seg / "fold_0", n_boot, seed, {"model": "crfe", "fold": 0, "n_folds": 2})
    write_evaluation(_per_patient(1), seg, n_boot, seed,
                     {"model": "crfe", "n_folds": 2, "best_val_dice": 0.5, "postprocessing": {"rule": "auto"},
                      "single_fold_test": {m: fold0.get(m) for m in SINGLE_FOLD}, "inference": {"n_models": 2}})
    write_evaluation(_per_patient(2), seg / "unet", n_boot, seed, {"model": "unet", "best_val_dice": 0.4})
    root_layout = RunDir(root)
    write_comparison(root_layout, [root_layout])


def test_rescore_writes_what_training_with_the_new_setting_writes(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _train_like(old, 100)
    _train_like(new, 40)
    cfg = with_overrides(Config(), ["segmentation.bootstrap=40", "segmentation.compare=[unet]"])
    rels = ("segmentation/metrics.json", "segmentation/fold_0/metrics.json", "segmentation/unet/metrics.json",
            "segmentation/comparison.csv")
    assert all((old / r).read_bytes() != (new / r).read_bytes() for r in rels)  # other intervals before
    run = RunDir(old)
    with run.stage("train-seg") as st:
        out = rescore_stage(cfg, stage_inputs("train-seg", run.path), st)
    assert set(out) == set(rels[:3])
    for rel in (*rels, "segmentation/per_patient.csv"):
        assert (old / rel).read_bytes() == (new / rel).read_bytes(), rel
    m = json.loads((old / "segmentation" / "metrics.json").read_text(encoding="utf-8"))
    assert m["postprocessing"] == {"rule": "auto"} and m["inference"] == {"n_models": 2}  # training facts kept
