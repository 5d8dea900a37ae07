import pytest
import torch

from cervirad.segmentation.model import (CRFE, BiLSTMScan, PositionAttention, UNet, build_model, count_parameters,
                                         optimise_for_inference, predict_proba)


@pytest.mark.parametrize("arch", ["crfe", "unet"])
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 3, 96, 80), (1, 1, 50, 70), (1, 3, 33, 17)])
def test_output_has_input_size(arch, shape):
    torch.manual_seed(0)
    m = build_model(arch, shape[1], lstm_hidden=16).eval()
    with torch.no_grad():
        out = m(torch.randn(shape))
    assert out.shape == (shape[0], 1, shape[2], shape[3])
    assert torch.isfinite(out).all()


def test_alpha_starts_at_zero_and_attention_is_identity_then():
    pam = PositionAttention(16)
    assert pam.alpha.item() == 0.0
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(pam(x), x)
    with torch.no_grad():
        pam.alpha.fill_(1.0)
    assert not torch.allclose(pam(x), x)
    crfe = CRFE(1)
    assert crfe.bottleneck[1].alpha.item() == 0.0


def test_attention_rows_sum_to_one():
    pam = PositionAttention(16)
    a = torch.randn(1, 16, 4, 5)
    q, k = pam.query(a).flatten(2), pam.key(a).flatten(2)
    s = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)
    assert s.shape == (1, 20, 20)
    assert torch.allclose(s.sum(-1), torch.ones(1, 20))


@pytest.mark.parametrize("recurrence", ["rows", "rows+cols"])
def test_recurrent_module_is_bidirectional_with_configured_units(recurrence):
    r = BiLSTMScan(128, hidden=256, recurrence=recurrence)
    lstms = [m for m in r.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == (2 if recurrence == "rows+cols" else 1)
    assert all(m.bidirectional and m.hidden_size == 256 for m in lstms)
    for shape in [(1, 128, 32, 32), (2, 128, 20, 12)]:
        x = torch.randn(shape)
        assert r(x).shape == x.shape


def _reach(module: torch.nn.Module, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """(H, W) bool: which input positions the output position (i, j) depends on (non-zero gradient)."""
    x = x.clone().requires_grad_(True)
    module(x)[0, :, i, j].sum().backward()
    return x.grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("recurrence", ["rows", "rows+cols"])
def test_rows_plus_cols_makes_every_output_depend_on_every_input_row_and_column(recurrence):
    torch.manual_seed(0)
    crfe = build_model("crfe", 1, lstm_hidden=8, recurrence=recurrence).double()
    bottleneck = crfe.bottleneck  # recurrent module + position attention (alpha = 0 at init: identity)
    x = torch.randn(1, 128, 8, 8, dtype=torch.float64)
    for i in range(8):
        for j in range(8):
            reach = _reach(bottleneck, x, i, j)
            if recurrence == "rows+cols":
                assert reach.all(), (i, j)
            else:  # today's behaviour: only the 2 input rows pooled with output row i
                rows = reach.any(1).nonzero().flatten().tolist()
                assert rows == [2 * (i // 2), 2 * (i // 2) + 1] and reach.any(0).all(), (i, j)


def test_recurrence_is_validated():
    with pytest.raises(ValueError, match="recurrence"):
        build_model("crfe", 1, recurrence="cols")


def test_crfe_encoder_decoder_channels_per_spec():
    m = CRFE(3)
    assert [m.enc1[0].out_channels, m.enc2[0].out_channels, m.enc3[0].out_channels] == [32, 64, 128]
    assert [m.dec3[0].out_channels, m.dec2[0].out_channels, m.head.out_channels] == [64, 32, 1]
    assert m.enc1[0].in_channels == 3 and m.head.kernel_size == (1, 1)


def test_unet_is_comparable_in_size():
    c, u = count_parameters(CRFE(1)), count_parameters(UNet(1))
    assert 0.3 < u / c < 1.5


def test_deep_supervision_returns_aux_heads_in_training_only():
    m = build_model("crfe", 1, lstm_hidden=8, deep_supervision=True)
    x = torch.randn(2, 1, 48, 48)
    main, aux = m.train()(x)
    assert main.shape == (2, 1, 48, 48) and len(aux) == 2 and all(a.shape == main.shape for a in aux)
    assert m.eval()(x).shape == (2, 1, 48, 48)


@pytest.mark.parametrize("arch,recurrence", [("crfe", "rows"), ("crfe", "rows+cols"), ("unet", "rows")])
def test_optimised_path_matches_eager(arch, recurrence):
    torch.manual_seed(1)
    m = build_model(arch, 1, lstm_hidden=16, recurrence=recurrence)
    m.train()
    with torch.no_grad():  # move BN running stats away from identity so folding matters
        for _ in range(3):
            m(torch.randn(4, 1, 64, 64) * 2 + 1)
    m.eval()
    x = torch.randn(3, 1, 64, 64)
    ref = predict_proba(m, x)
    opt = optimise_for_inference(m)
    got = predict_proba(opt, x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, got, atol=1e-4)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in opt.modules())
    assert opt.cpu_chunk_pixels > 0 and opt.split_head is not None  # the shipped CPU path
    big = torch.randn(3, 1, 200, 184)  # more pixels than half a chunk: the 3 slices run one by one
    assert torch.allclose(predict_proba(m, big), predict_proba(opt, big.contiguous(memory_format=torch.channels_last)),
                          atol=1e-4)
    a, b = ref > ref.median(), got > ref.median()  # masks at a threshold with many pixels near it
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.999
    assert m.cpu_chunk_pixels == 0 and m.split_head is None and "split_head.0.weight" not in m.state_dict()
