import math

import pytest
import torch

from cervirad.config import SegmentationConfig, SizePriorConfig
from cervirad.segmentation.losses import (SegLoss, equivalent_diameter, segmentation_loss, size_prior_penalty,
                                          soft_dice_loss)


def _disc(n, r, cy=None, cx=None):
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    cy = n / 2 if cy is None else cy
    cx = n / 2 if cx is None else cx
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()


def test_dice_loss_of_perfect_prediction_is_zero():
    t = _disc(32, 6)[None]
    assert soft_dice_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    assert soft_dice_loss(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)).item() == pytest.approx(0.0)


def test_dice_loss_of_disjoint_prediction_is_near_one():
    a, b = _disc(64, 5, 10, 10)[None], _disc(64, 5, 50, 50)[None]
    assert soft_dice_loss(a, b).item() > 0.99


def test_combined_loss_weights():
    t = _disc(16, 4)[None]
    z = torch.randn(1, 1, 16, 16)
    d = segmentation_loss(z, t, 1.0, 0.0)
    b = segmentation_loss(z, t, 0.0, 1.0)
    assert segmentation_loss(z, t, 2.0, 3.0).item() == pytest.approx(2 * d.item() + 3 * b.item(), rel=1e-5)


def test_equivalent_diameter():
    assert equivalent_diameter(torch.tensor(math.pi * 100.0)).item() == pytest.approx(20.0, rel=1e-4)


def test_size_prior_penalises_only_out_of_range():
    px = 1.0  # 1 mm^2 pixels
    in_range = _disc(64, 10)[None]  # ~20 mm diameter
    assert size_prior_penalty(in_range, in_range, px).item() == pytest.approx(0.0, abs=1e-3)
    huge = torch.ones(1, 64, 64)  # equivalent diameter ~72 mm > 40
    assert size_prior_penalty(huge, in_range, px).item() > 0.5
    tiny = _disc(64, 2)[None]  # ~4 mm
    assert size_prior_penalty(tiny, in_range, px).item() > 0.3  # reference section is >= 1 cm
    assert size_prior_penalty(tiny, tiny, px).item() == pytest.approx(0.0, abs=1e-6)  # lesion end slice


def test_segloss_adds_deep_supervision_and_prior():
    t = _disc(32, 5)[None]
    z = torch.randn(1, 1, 32, 32)
    base = SegLoss(SegmentationConfig(), 1.0)(z, t)
    with_aux = SegLoss(SegmentationConfig(deep_supervision=True), 1.0)((z, [z, z]), t)
    assert with_aux.item() == pytest.approx(base.item() * 1.3, rel=1e-5)
    prior = SegLoss(SegmentationConfig(size_prior=SizePriorConfig(enabled=True, weight=1.0)), 100.0)
    assert prior(torch.full((1, 1, 32, 32), 10.0), t).item() > SegLoss(SegmentationConfig(), 100.0)(
        torch.full((1, 1, 32, 32), 10.0), t).item()
