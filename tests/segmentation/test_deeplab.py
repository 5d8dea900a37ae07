"""DeepLabv3 (segmentation/deeplab.py) and the registry of networks (segmentation/model.py)."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cervirad.config import load_config
from cervirad.segmentation.deeplab import ASPP, DeepLabV3, matched_deeplab_base
from cervirad.segmentation.infer import load_model, predict_slices, segment_paths
from cervirad.segmentation.losses import segmentation_loss
from cervirad.networks import NETWORKS
from cervirad.segmentation.model import CRFE, build_model, count_parameters
from cervirad.segmentation.checkpoint import build_network, checkpoint_header, network_options, save_checkpoint


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 3, 50, 70), (1, 2, 33, 17)])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_has_input_size_and_one_channel(shape, output_stride):
    torch.manual_seed(0)
    net = DeepLabV3(shape[1], base=8, output_stride=output_stride).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 1, *shape[2:]) and torch.isfinite(out).all()
    assert net.backbone.stem[0].in_channels == shape[1]  # the stem takes the cohort's sequences


@pytest.mark.parametrize("output_stride,rates", [(8, (12, 24, 36)), (16, (6, 12, 18))])
def test_backbone_output_stride_and_aspp_rates(output_stride, rates):
    net = DeepLabV3(1, base=8, output_stride=output_stride)
    mid, top = net.backbone(torch.randn(1, 1, 128, 128))
    assert top.shape[-2:] == (128 // output_stride,) * 2 and top.shape[1] == 64  # base x 8
    aspp = net.head[0]
    assert isinstance(aspp, ASPP) and len(aspp.branches) == 5  # 1x1, three atrous 3x3, image pooling
    assert tuple(b[0].dilation[0] for b in aspp.branches[1:4]) == rates
    # the dilated stages keep the resolution: no conv in stage 4 strides
    assert all(m.stride == (1, 1) for m in net.backbone.stages[3].modules() if isinstance(m, torch.nn.Conv2d))


def test_deep_supervision_adds_the_auxiliary_head_in_training_only():
    net = DeepLabV3(1, base=8, deep_supervision=True)
    out, aux = net(torch.randn(2, 1, 48, 48))
    assert out.shape == aux[0].shape == (2, 1, 48, 48)
    assert net.eval()(torch.randn(1, 1, 48, 48)).shape == (1, 1, 48, 48)


def test_a_few_training_steps_learn_a_blob():
    torch.manual_seed(0)
    net = DeepLabV3(1, base=8)
    x = torch.randn(4, 1, 48, 48) * 0.1
    y = torch.zeros(4, 48, 48)
    y[:, 12:30, 16:36] = 1
    x[:, 0] += 2 * y
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = segmentation_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_width_matches_crfe_parameters_and_is_stored_in_the_checkpoint():
    cfg = load_config(None, ["segmentation.model=deeplabv3"])
    target = count_parameters(CRFE(1, 256, False, "rows+cols"))
    opts = network_options(cfg, "deeplabv3", 1)
    assert opts == {"base": matched_deeplab_base(target), "output_stride": 8}
    n = count_parameters(build_network(cfg, "deeplabv3", 1))
    assert abs(n - target) / target < 0.2  # 3.05 M vs CRFE's 2.73 M at base 28
    assert checkpoint_header(cfg, "deeplabv3", 1)["net_options"] == opts
    fixed = load_config(None, ["segmentation.deeplab_base=12"])
    assert network_options(fixed, "deeplabv3", 1)["base"] == 12


def test_every_registered_network_builds_with_a_label():
    assert tuple(NETWORKS) == ("crfe", "unet", "deeplabv3")
    for arch in NETWORKS:
        assert NETWORKS[arch].label
        net = build_model(arch, 2, lstm_hidden=8, net_options={"base": 8}).eval()
        with torch.no_grad():
            assert net(torch.randn(1, 2, 32, 32)).shape == (1, 1, 32, 32)


def test_model_pt_round_trip_through_segment(tmp_path):
    cfg = load_config(None, ["segmentation.deeplab_base=8", "segmentation.component_selection=never",
                             "segmentation.tta_mirror=false"])
    torch.manual_seed(0)
    net = build_network(cfg, "deeplabv3", 1)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding them is tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "model.pt"
    save_checkpoint({**checkpoint_header(cfg, "deeplabv3", 1), "epoch": 1, "val_dice": 0.0,
                     "state_dict": net.state_dict()}, path)
    model = load_model(path, "cpu")
    assert model.info["arch"] == "deeplabv3" and model.info["net_options"]["base"] == 8
    x = np.random.default_rng(0).standard_normal((3, 1, 40, 56)).astype(np.float32)
    probs, _ = predict_slices(model, x)
    with torch.no_grad():
        eager = torch.sigmoid(net.eval()(torch.from_numpy(x)))[:, 0].numpy()
    assert np.abs(probs - eager).max() < 1e-4  # BN folded, channels-last: float round-off only
    img = sitk.GetImageFromArray(np.random.default_rng(1).normal(100, 20, (5, 40, 48)).astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "case.nii.gz"))
    out = segment_paths(path, tmp_path / "case.nii.gz", tmp_path / "out")
    assert sitk.ReadImage(str(out[0])).GetSize() == img.GetSize()
