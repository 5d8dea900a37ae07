"""Affordable inference (segmentation/cost.py): the rule, the one-pass plain + mirrored prediction,
and model.pt's decision followed at load."""
import math

import numpy as np
import pytest
import torch

from cervirad.config import with_overrides
from cervirad.splits import load_splits
from cervirad.preprocess import load_patient_slices
from cervirad.segmentation.checkpoint import checkpoint_header, read_checkpoint, save_checkpoint
from cervirad.segmentation.cost import DICE_PER_DOUBLING, TARGET_SECONDS, decide, measure, worth_it
from cervirad.segmentation.folds import ensemble_checkpoint
from cervirad.segmentation.infer import load_model, predict_slices
from cervirad.segmentation.model import build_model
from cervirad.segmentation.tta import mirrored, plain_and_mirrored


def _unet(seed):
    torch.manual_seed(seed)
    net = build_model("unet", 1, unet_width=0.25)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return net


def test_rule_one_dice_point_per_doubling_of_the_time():
    assert DICE_PER_DOUBLING * math.log2(4) == pytest.approx(0.02)
    assert not worth_it(0.019, 4.0) and worth_it(0.021, 4.0)
    assert worth_it(0.0, 1.0) and not worth_it(-0.001, 1.0)


def _measured(gain, plain_s):
    return {"val_dice_plain": 0.5, "val_dice_mirrored": 0.5 + gain, "n_val_patients": 3,
            "seconds_per_slice_plain": plain_s, "seconds_per_slice_mirrored": 4 * plain_s}


def test_decide_keeps_mirroring_only_for_enough_dice_and_the_ensemble_only_when_affordable():
    assert decide(_measured(0.03, 0.01), 1)["tta_mirror"] is True
    assert decide(_measured(0.01, 0.01), 1)["tta_mirror"] is False
    assert decide(_measured(0.03, 0.01), 1, mirror_allowed=False)["tta_mirror"] is False
    fast = decide(_measured(0.0, TARGET_SECONDS / 60 / 5 * 0.9), 5, [0.4, 0.6, 0.5, 0.2, 0.3])
    assert fast["members"] == [0, 1, 2, 3, 4] and fast["seconds_per_volume"] <= TARGET_SECONDS
    slow = decide(_measured(0.0, TARGET_SECONDS / 60 / 5 * 1.1), 5, [0.4, 0.6, 0.5, 0.2, 0.3])
    assert slow["members"] == [1]  # the member with the best held-out validation Dice alone
    assert "members" not in decide(_measured(0.0, 1.0), 1)


def test_plain_and_mirrored_in_one_pass_equals_the_two_separately():
    net = _unet(0).eval()

    def proba(t):
        with torch.no_grad():
            return torch.sigmoid(net(t))[:, 0]

    x = torch.randn(3, 1, 32, 40)
    both = plain_and_mirrored(proba, x)
    torch.testing.assert_close(both[:3], proba(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(both[3:], mirrored(proba, x), atol=1e-6, rtol=0)


def test_load_model_follows_the_stored_decision(tmp_path, tiny_cfg):
    cfg = with_overrides(tiny_cfg, ["segmentation.unet_width=0.25", "segmentation.tta_mirror=true"])
    paths = []
    for i in range(3):
        p = tmp_path / f"fold_{i}" / "model.pt"
        save_checkpoint({**checkpoint_header(cfg, "unet", 1), "state_dict": _unet(i).state_dict()}, p)
        paths.append(p)
    ens = tmp_path / "model.pt"
    save_checkpoint({**ensemble_checkpoint(paths, [["A"], ["B"], ["C"]], read_checkpoint),
                     "inference": {"tta_mirror": False, "members": [2]}}, ens)
    model = load_model(ens, "cpu")
    assert len(model.nets) == 1 and not model.tta_mirror and model.info["folds"][0]["fold"] == 2
    images = np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32)
    only = load_model(paths[2], "cpu", tta_mirror=False)
    np.testing.assert_allclose(predict_slices(model, images)[0], predict_slices(only, images)[0], atol=1e-6)
    assert load_model(ens, "cpu", tta_mirror=True).tta_mirror  # an explicit setting still wins


def test_measure_scores_each_validation_patient_plain_and_mirrored(seg_run, tmp_path):
    cfg, run = seg_run
    cfg = with_overrides(cfg, ["segmentation.unet_width=0.25", "segmentation.threshold=0.5"])
    path = tmp_path / "model.pt"
    save_checkpoint({**checkpoint_header(cfg, "unet", 1), "state_dict": _unet(3).state_dict()}, path)
    val = load_splits(run.path)["val"][:2]
    m = measure(cfg, run, [(path, val)])
    model = load_model(path, "cpu", tta_mirror=False, sliding_window=cfg.segmentation.sliding_window)
    dice = []
    for pid in val:
        images, truth = load_patient_slices(run.path, pid)
        p = predict_slices(model, images)[0] > 0.5
        dice.append(2 * (p & (truth > 0)).sum() / max(1, p.sum() + (truth > 0).sum()))
    assert m["n_val_patients"] == len(val) and m["val_dice_plain"] == pytest.approx(np.mean(dice), abs=1e-6)
    assert m["seconds_per_slice_mirrored"] > m["seconds_per_slice_plain"] > 0
