"""Segmentation fixtures: a private, writable copy of the shared tiny run and fast training settings."""
import shutil

import pytest

from cervirad.config import with_overrides

FAST = ["segmentation.epochs=2", "segmentation.train_crop=64", "segmentation.max_train_slices_per_epoch=8",
        "segmentation.max_val_slices=8", "segmentation.lstm_hidden=16", "segmentation.bootstrap=50",
        "segmentation.n_overlays=2", "segmentation.early_stopping_patience=5",
        "segmentation.tta_mirror=false",  # 4x inference; tests/segmentation/test_tta.py and test_ensemble.py cover it
        "segmentation.max_seconds_per_volume=null"]  # keep ensembles whatever the load (test_cost.py covers the rule)


@pytest.fixture()
def seg_run(tmp_path, tiny_run, tiny_cfg):
    """(cfg, run) on a copy of the 12-patient preprocessed demo run, with tiny training settings."""
    from cervirad.rundir import RunDir

    dst = tmp_path / "run"
    shutil.copytree(tiny_run.path, dst)
    cfg = with_overrides(tiny_cfg, FAST)
    return cfg, RunDir(dst)
