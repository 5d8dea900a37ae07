"""Test-time mirroring and the Gaussian sliding window (segmentation/tta.py) and their hook in LoadedModel."""
import math

import numpy as np
import pytest
import torch

from cervirad.segmentation.infer import LoadedModel, predict_slices
from cervirad.segmentation.model import build_model, optimise_for_inference, predict_proba
from cervirad.segmentation.tta import (gaussian_importance, mirrored, needs_window, predict, sliding_window,
                                       window_starts, window_weights)


def _net(seed=0, arch="crfe"):
    torch.manual_seed(seed)
    net = build_model(arch, 1, lstm_hidden=8) if arch == "crfe" else build_model("unet", 1, unet_width=0.25)
    for m in net.modules():  # alpha starts at 0: give the attention a say so the network is clearly not symmetric
        if hasattr(m, "alpha"):
            m.alpha.data.fill_(0.5)
    return optimise_for_inference(net)


def _proba(net):
    return lambda t: predict_proba(net, t)


def test_mirroring_a_symmetric_input_gives_a_symmetric_output():
    torch.manual_seed(1)
    a = torch.randn(2, 1, 40, 40)  # not a multiple of 16: the network's own padding breaks symmetry
    x = (a + a.flip(-1) + a.flip(-2) + a.flip(-2, -1)) / 4
    net = _net()
    plain = predict_proba(net, x)
    assert (plain - plain.flip(-1)).abs().max() > 1e-4  # the network alone is not flip-equivariant
    y = mirrored(_proba(net), x)
    assert y.shape == (2, 40, 40)
    for dims in ((-1,), (-2,), (-2, -1)):
        torch.testing.assert_close(y, y.flip(dims), atol=1e-6, rtol=0)


def test_mirroring_flips_each_prediction_back_before_averaging():
    net = _net(2, "unet")
    x = torch.randn(3, 1, 48, 32)
    f = _proba(net)
    manual = (f(x) + f(x.flip(-1)).flip(-1) + f(x.flip(-2)).flip(-2) + f(x.flip(-2, -1)).flip(-2, -1)) / 4
    torch.testing.assert_close(mirrored(f, x), manual, atol=1e-6, rtol=0)
    # a position-dependent "network" with a known answer: p = x * ramp(column) -> x * (ramp + reversed ramp) / 2
    ramp = torch.linspace(0, 1, 32)
    expected = x[:, 0] * (ramp + ramp.flip(0)) / 2
    torch.testing.assert_close(mirrored(lambda t: t[:, 0] * ramp, x), expected, atol=1e-6, rtol=0)


def test_loaded_model_mirrors_when_asked():
    net = _net(3, "unet")
    images = np.random.default_rng(0).normal(size=(5, 1, 32, 48)).astype(np.float32)
    info = {"in_channels": 1, "input_sequences": ["t2w"], "train_patch": 64}
    plain, _ = predict_slices(LoadedModel(net, info, torch.device("cpu")), images, 2)
    tta, _ = predict_slices(LoadedModel(net, info, torch.device("cpu"), tta_mirror=True), images, 2)
    f = _proba(net)
    x = torch.from_numpy(images)
    np.testing.assert_allclose(plain, f(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(tta, mirrored(f, x).numpy(), atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-4


def test_gaussian_importance_map():
    g = gaussian_importance((17, 17))  # odd side: the centre pixel is the peak
    assert g.shape == (17, 17) and float(g[8, 8]) == pytest.approx(1.0) and float(g.max()) == pytest.approx(1.0)
    sigma = 17 / 8
    assert float(g[8, 10]) == pytest.approx(math.exp(-0.5 * (2 / sigma) ** 2), rel=1e-5)
    assert float(g[6, 8]) == pytest.approx(float(g[8, 10]), rel=1e-6)  # isotropic for a square window
    assert float(g.min()) > 0
    torch.testing.assert_close(g, g.flip(0).flip(1))


def test_window_starts_follow_nnunet():
    assert window_starts(64, 64) == [0] and window_starts(40, 64) == [0]
    assert window_starts(96, 64) == [0, 32]
    starts = window_starts(256, 96)  # ceil(160 / 48) + 1 = 5 windows, evenly from 0 to 160
    assert starts == [0, 40, 80, 120, 160]
    assert all(b - a <= 48 for a, b in zip(starts, starts[1:]))


def test_sliding_window_on_a_patch_sized_slice_equals_plain_inference():
    net = _net(4)
    x = torch.randn(2, 1, 64, 64)
    f = _proba(net)
    torch.testing.assert_close(sliding_window(f, x, 64), f(x), atol=1e-6, rtol=0)
    assert not needs_window(x.shape, 64)
    torch.testing.assert_close(predict(f, x, mirror=False, patch=64), f(x))  # no window needed: whole slice


def test_sliding_window_covers_every_pixel_and_weights_sum_correctly():
    shape, patch = (96, 64), 64
    g = gaussian_importance((64, 64))
    expected = torch.zeros(shape)
    expected[0:64] += g  # windows start at rows 0 and 32, column 0 (the whole width)
    expected[32:96] += g
    torch.testing.assert_close(window_weights(shape, patch), expected)
    big = window_weights((200, 150), 64)
    assert float(big.min()) > 0  # every pixel is covered
    x = torch.randn(2, 1, 200, 150)
    # a pixel-wise "network": every window returns the true values, so the weighted mean must too
    torch.testing.assert_close(sliding_window(lambda t: torch.sigmoid(t[:, 0]), x, 64), torch.sigmoid(x[:, 0]),
                               atol=1e-6, rtol=0)
    calls = []
    sliding_window(lambda t: (calls.append(tuple(t.shape[-2:])), t[:, 0])[1], x, 64)
    assert set(calls) == {(64, 64)}
    assert len(calls) == len(window_starts(200, 64)) * len(window_starts(150, 64))


def test_loaded_model_windows_only_slices_larger_than_the_training_patch():
    net = _net(5, "unet")
    info = {"in_channels": 1, "input_sequences": ["t2w"], "train_patch": 32}
    model = LoadedModel(net, info, torch.device("cpu"), sliding_window="auto")
    f = _proba(net)
    x = torch.randn(1, 1, 80, 48)
    torch.testing.assert_close(model.proba(x), sliding_window(f, x, 32), atol=1e-6, rtol=0)
    small = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(model.proba(small), f(small))
    never = LoadedModel(net, info, torch.device("cpu"), sliding_window="never")
    torch.testing.assert_close(never.proba(x), f(x))
