"""segmentation.model auto and the networks trained beside the run's model (segmentation/selection.py)."""
import json

import pandas as pd
import pytest

from cervirad import segmentation
from cervirad.config import load_config, with_overrides
from cervirad.segmentation.selection import homes, pick_best, trained_networks
from cervirad.stages import stage_inputs


def test_trained_networks_and_where_they_go(tmp_path):
    from cervirad.layout import Layout

    s = load_config(None, []).segmentation
    assert trained_networks(s) == ["crfe"]
    s = load_config(None, ["segmentation.also_train_unet=true", "segmentation.compare=[deeplabv3, unet]"]).segmentation
    assert trained_networks(s) == ["crfe", "deeplabv3", "unet"]
    where = homes(Layout(tmp_path), s)
    assert where["crfe"].dir == tmp_path / "segmentation" and where["crfe"].masks == tmp_path / "masks"
    assert where["unet"].dir == tmp_path / "segmentation" / "unet"
    s = load_config(None, ["segmentation.model=unet"]).segmentation  # the run's model is at the run's place
    assert homes(Layout(tmp_path), s)["unet"].dir == tmp_path / "segmentation"
    auto = load_config(None, ["segmentation.model=auto"]).segmentation
    assert trained_networks(auto) == ["crfe", "unet", "deeplabv3"]
    assert homes(Layout(tmp_path), auto)["crfe"].dir == tmp_path / "segmentation" / "crfe"


def test_pick_best_takes_the_highest_validation_dice_first_on_ties():
    assert pick_best({"crfe": 0.4, "unet": 0.6, "deeplabv3": 0.5})[0] == "unet"
    assert pick_best({"crfe": 0.5, "unet": 0.5})[0] == "crfe"
    assert pick_best({"crfe": float("nan"), "unet": 0.1})[0] == "unet"


def test_auto_keeps_the_network_with_the_highest_validation_dice(seg_run, monkeypatch):
    """A controlled fake training: each network reports a fixed validation Dice and an INVERSE test Dice, so
    a choice on the test patients would pick another network."""
    cfg, run = seg_run
    val = {"crfe": 0.41, "unet": 0.38, "deeplabv3": 0.57}
    test = {"crfe": 0.9, "unet": 0.8, "deeplabv3": 0.1}

    def fake_train(cfg, run, cohort, home, key, progress, split=None):
        home.masks.mkdir(parents=True, exist_ok=True)
        (home.masks / "P1.nii.gz").write_text(home.arch)
        (home.dir / "model.pt").write_text(home.arch)
        d = {"value": test[home.arch], "ci_low": 0.0, "ci_high": 1.0}
        m = {"model": home.arch, "best_val_dice": val[home.arch], "dice": d, "n_patients": 2}
        (home.dir / "metrics.json").write_text(json.dumps(m))
        (home.fold(0)).mkdir()
        return m

    monkeypatch.setattr(segmentation, "_train_one", fake_train)
    with run.stage("train-seg") as st:
        auto = with_overrides(cfg, ["segmentation.model=auto"])
        segmentation.train_stage(auto, stage_inputs("train-seg", run.path), st)
    root = run.path / "segmentation"
    assert (root / "model.pt").read_text() == "deeplabv3" and (run.path / "masks" / "P1.nii.gz").read_text() == "deeplabv3"
    m = json.loads((root / "metrics.json").read_text())
    assert m["model"] == "deeplabv3" and m["selection"]["chosen"] == "deeplabv3"
    assert not (root / "fold_0").exists()  # fold folders stay beside
    table = pd.read_csv(root / "comparison.csv")
    assert list(table.model) == ["crfe", "unet", "deeplabv3"]
    assert list(table.best_val_dice) == pytest.approx([0.41, 0.38, 0.57])
    assert run.stage_record("train-seg")["auto_model"] == "deeplabv3"
