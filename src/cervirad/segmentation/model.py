"""The CRFE network (SPEC §3) and a plain U-Net baseline of the same size.

CRFE = encoder -> recurrent module (bidirectional LSTM) -> position attention -> decoder.

Encoder: three blocks ``conv 3x3 -> BatchNorm -> ReLU`` with 32, 64 and 128 channels; each
block's output is kept as a skip connection and then 2 x 2 max-pooled, so a 256 x 256 slice
becomes a 128-channel 32 x 32 map. (BatchNorm is not named by the paper; it is standard in
U-Net-type models, makes the short CPU runs converge, and costs nothing at inference because
:func:`optimise_for_inference` folds it into the convolution.)

Recurrent module (:class:`BiLSTMScan`): how the 2D map becomes sequences. The 32 x 32 map is
2 x 2 average-pooled to 16 x 16 and every ROW becomes one sequence of 16 steps (batch =
slices x rows), read left->right and right->left by one bidirectional LSTM with 256 units per
direction. With ``recurrence='rows+cols'`` (ReNet) the 512 row outputs per position are then
read along every COLUMN, top->bottom and bottom->top, by a second bidirectional LSTM, so every
position's output depends on the whole pooled map; with ``'rows'`` an output row sees only its
own input row (plus its 2x2 pooling partner). The 512 outputs per position are projected back
to 128 channels with a 1 x 1 conv, upsampled x2 (nearest) and added to the encoder map
(residual). Why the pooling: an LSTM costs ``positions x 4 x 256 x (256 + input) x 2`` FLOPs,
so a pixel-wise scan of the 32 x 32 map in both directions would cost ~3 GFLOP per slice, more
than the whole convolutional network; rows at 16 x 16 cost ~0.4 GFLOP, the column pass
another ~0.8. With rows only, vertical (and every other) long-range context comes from the
position attention right after, which is global.

Position attention (:class:`PositionAttention`, DANet form): ``B = conv1x1(A)``,
``C = conv1x1(A)`` (C/8 channels each), ``D = conv1x1(A)`` (C channels), reshaped to
``(C', N)`` with ``N = H·W``; ``S = softmax(Bᵀ C)`` over the last axis (N x N, row i = how
much position i attends to each j); ``E = α · (D Sᵀ) + A`` with a learnable scalar α
initialised to 0 so training starts from the plain encoder features (residual).

Decoder: three x2 upsamplings (nearest) back to the input size; after the first two the
encoder skip of that level is concatenated and fused by ``conv 3x3 -> BN -> ReLU`` with 64
and then 32 channels (SPEC); after the last one the 32-channel skip of the first block is
concatenated and a 1 x 1 conv gives one channel. The network returns LOGITS; the sigmoid of
SPEC §3 is applied by :func:`predict_proba` and, inside the loss, by the numerically stable
BCE-with-logits (mathematically the same).

Deep supervision (optional): 1 x 1 heads on the two decoder levels (64 and 32 channels),
upsampled to the input size; in training mode the model then returns ``(main, [aux...])``.

Any input size works: inputs are zero-padded to a multiple of 16 and the output is cropped
back, so the output always has the input's height and width.

U-Net baseline (:class:`UNet`): the same encoder and decoder with the recurrent + attention
module replaced by two plain ``conv 3x3 -> BN -> ReLU`` layers (128 channels) at the
bottleneck, so the comparison isolates what the CRFE module adds. At width 1.0 it has half
CRFE's parameters (0.57 M vs 1.15 M); ``unet_width`` multiplies every channel count
(32/64/128 -> 32w/64w/128w) and :func:`matched_unet_width` picks the width whose parameter
count is closest to CRFE's, so a comparison is not won by size alone.

Builders (:func:`build_crfe`, :func:`build_unet`, :func:`build_deeplab` for :mod:`.deeplab`): each
rebuilds its network from the network part of a checkpoint header, so ``model.pt`` rebuilds any of
them; :data:`cervirad.networks.NETWORKS` registers them (one entry per network, with its label).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..networks import NETWORKS

RECURRENCES = ("rows", "rows+cols")  # CRFE's recurrent module: row scan only, or rows then columns (ReNet)
MULTIPLE = 16  # three 2x2 poolings plus the recurrent module's 2x2 pooling


class ConvBNReLU(nn.Sequential):
    """3 x 3 convolution (padding 1), BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BiLSTMScan(nn.Module):
    """Bidirectional LSTM along the rows (then, for 'rows+cols', the columns) of a 2x-pooled
    feature map, projected back and added to the input (see module doc)."""

    def __init__(self, channels: int, hidden: int = 256, recurrence: str = "rows"):
        super().__init__()
        if recurrence not in RECURRENCES:
            raise ValueError(f"unknown recurrence {recurrence!r}; expected one of {RECURRENCES}")
        self.recurrence = recurrence
        self.lstm = nn.LSTM(channels, hidden, batch_first=True, bidirectional=True)
        if recurrence == "rows+cols":
            self.col_lstm = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Conv2d(2 * hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = F.avg_pool2d(x, 2).permute(0, 2, 3, 1)  # (b, rows, cols, c)
        hp, wp = p.shape[1:3]
        out, _ = self.lstm(p.reshape(b * hp, wp, c))  # one sequence per row
        out = out.reshape(b, hp, wp, -1)
        if self.recurrence == "rows+cols":
            cols = out.transpose(1, 2).reshape(b * wp, hp, -1)  # one sequence per column
            out = self.col_lstm(cols)[0].reshape(b, wp, hp, -1).transpose(1, 2)
        out = F.interpolate(self.proj(out.permute(0, 3, 1, 2)), size=(h, w), mode="nearest")
        return x + out


class PositionAttention(nn.Module):
    """E = α · (D Sᵀ) + A with S = softmax(Bᵀ C) over N = H·W positions; α starts at 0."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)  # B
        self.key = nn.Conv2d(channels, inner, 1)  # C
        self.value = nn.Conv2d(channels, channels, 1)  # D
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        b, c, h, w = a.shape
        q = self.query(a).flatten(2)  # (b, c', N)
        k = self.key(a).flatten(2)  # (b, c', N)
        v = self.value(a).flatten(2)  # (b, c, N)
        s = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (b, N, N)
        e = torch.bmm(v, s.transpose(1, 2)).reshape(b, c, h, w)  # D Sᵀ
        return self.alpha * e + a


class _EncoderDecoder(nn.Module):
    """Encoder 32/64/128 (``base`` x 1/2/4) with skips, a bottleneck module, decoder 64/32 + 1x1 head."""

    def __init__(self, in_channels: int, bottleneck: nn.Module, deep_supervision: bool = False, base: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.deep_supervision = deep_supervision
        c1, c2, c3 = base, 2 * base, 4 * base
        self.enc1 = ConvBNReLU(in_channels, c1)
        self.enc2 = ConvBNReLU(c1, c2)
        self.enc3 = ConvBNReLU(c2, c3)
        self.bottleneck = bottleneck
        self.dec3 = ConvBNReLU(c3 + c3, c2)
        self.dec2 = ConvBNReLU(c2 + c2, c1)
        self.head = nn.Conv2d(c1 + c1, 1, 1)
        if deep_supervision:
            self.aux3 = nn.Conv2d(c2, 1, 1)
            self.aux2 = nn.Conv2d(c1, 1, 1)
        self.cpu_chunk_pixels = 0  # > 0: eval-mode CPU batches run in chunks of about this many pixels
        self.split_head: nn.ModuleList | None = None  # the head split in two (set for inference)

    def forward(self, x: torch.Tensor):
        chunk = max(1, self.cpu_chunk_pixels // (x.shape[-2] * x.shape[-1])) if self.cpu_chunk_pixels else 0
        if chunk and not self.training and x.device.type == "cpu" and len(x) > chunk:
            return torch.cat([self._forward(part) for part in x.split(chunk)])
        return self._forward(x)

    def _forward(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        z = self.bottleneck(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([_up(z), e3], 1))
        d2 = self.dec2(torch.cat([_up(d3), e2], 1))
        if self.split_head is not None:  # a 1x1 conv commutes with nearest upsampling: no full-size concat
            out = (_up(self.split_head[0](d2)) + self.split_head[1](e1))[..., :h, :w]
        else:
            out = self.head(torch.cat([_up(d2), e1], 1))[..., :h, :w]
        if self.deep_supervision and self.training:
            size = out.shape[-2:]
            aux = [F.interpolate(self.aux3(d3), scale_factor=4, mode="bilinear")[..., :size[0], :size[1]],
                   F.interpolate(self.aux2(d2), scale_factor=2, mode="bilinear")[..., :size[0], :size[1]]]
            return out, aux
        return out


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class CRFE(_EncoderDecoder):
    """Convolutional recurrent feature extraction network (SPEC §3)."""

    def __init__(self, in_channels: int = 1, lstm_hidden: int = 256, deep_supervision: bool = False,
                 recurrence: str = "rows"):
        super().__init__(in_channels, nn.Sequential(BiLSTMScan(128, lstm_hidden, recurrence), PositionAttention(128)),
                         deep_supervision)


class UNet(_EncoderDecoder):
    """Plain U-Net baseline: CRFE's encoder/decoder with two 3x3 convs at the bottleneck; ``width``
    multiplies every channel count (1.0 = CRFE's 32/64/128)."""

    def __init__(self, in_channels: int = 1, deep_supervision: bool = False, width: float = 1.0):
        base = unet_base(width)
        c3 = 4 * base
        super().__init__(in_channels, nn.Sequential(ConvBNReLU(c3, c3), ConvBNReLU(c3, c3)), deep_supervision, base)


def unet_base(width: float) -> int:
    """First-level channel count of a U-Net of ``width`` (32 at width 1.0)."""
    return max(1, int(round(32 * float(width))))


def matched_unet_width(in_channels: int = 1, lstm_hidden: int = 256, recurrence: str = "rows",
                       deep_supervision: bool = False) -> float:
    """The U-Net width (a multiple of 1/32) whose parameter count is closest to CRFE's with these settings."""
    target = count_parameters(CRFE(in_channels, lstm_hidden, deep_supervision, recurrence))
    best = min(range(8, 257), key=lambda b: abs(_unet_parameters(in_channels, deep_supervision, b) - target))
    return best / 32


def _unet_parameters(in_channels: int, deep_supervision: bool, base: int) -> int:
    """Parameter count of a U-Net whose first level has ``base`` channels (closed form, no allocation)."""
    c1, c2, c3 = base, 2 * base, 4 * base
    conv = lambda cin, cout: 9 * cin * cout + 2 * cout  # noqa: E731  3x3 conv without bias + BatchNorm
    n = (conv(in_channels, c1) + conv(c1, c2) + conv(c2, c3) + 2 * conv(c3, c3) + conv(2 * c3, c2)
         + conv(2 * c2, c1) + 2 * c1 + 1)
    return n + ((c2 + 1) + (c1 + 1) if deep_supervision else 0)


# the builders of the registered networks (cervirad/networks.py names them): ``spec`` is the network part of
# a checkpoint header (:func:`network_spec`): ``in_channels``, ``lstm_hidden``, ``recurrence``,
# ``deep_supervision``, ``unet_width`` and ``net_options`` (a network's own settings)
def build_crfe(spec: dict) -> nn.Module:
    return CRFE(int(spec["in_channels"]), int(spec.get("lstm_hidden", 256)), bool(spec.get("deep_supervision", False)),
                spec.get("recurrence", "rows"))  # checkpoints written before recurrence existed: rows


def build_unet(spec: dict) -> nn.Module:
    return UNet(int(spec["in_channels"]), bool(spec.get("deep_supervision", False)),
                float(spec.get("unet_width") or 1.0))  # older U-Nets: width 1.0


def build_deeplab(spec: dict) -> nn.Module:
    from .deeplab import DeepLabV3

    o = spec.get("net_options") or {}
    return DeepLabV3(int(spec["in_channels"]), int(o.get("base", 64)), int(o.get("output_stride", 8)),
                     deep_supervision=bool(spec.get("deep_supervision", False)))


def build_from_spec(arch: str, spec: dict) -> nn.Module:
    """The network ``arch`` (a key of :data:`cervirad.networks.NETWORKS`) described by ``spec`` (a checkpoint
    header, see :func:`build_crfe`)."""
    if arch not in NETWORKS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {tuple(NETWORKS)}")
    return NETWORKS[arch].builder()(spec)


def build_model(arch: str, in_channels: int, lstm_hidden: int = 256, deep_supervision: bool = False,
                recurrence: str = "rows", unet_width: float = 1.0, net_options: dict | None = None) -> nn.Module:
    """Construct ``arch`` (a key of :data:`cervirad.networks.NETWORKS`) for ``in_channels`` input sequences; ``recurrence``
    ('rows' or 'rows+cols') shapes CRFE's recurrent module, ``unet_width`` the U-Net, ``net_options``
    a network's own settings (DeepLabv3: ``base``, ``output_stride``)."""
    return build_from_spec(arch, {"in_channels": in_channels, "lstm_hidden": lstm_hidden, "recurrence": recurrence,
                                  "deep_supervision": deep_supervision, "unet_width": unet_width,
                                  "net_options": net_options or {}})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sigmoid probabilities (B, H, W) for a batch (B, C, H, W)."""
    out = model(x)
    if isinstance(out, tuple):
        out = out[0]
    return torch.sigmoid(out.float())[:, 0]


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the conv right before it (in place): inside any
    ``nn.Sequential`` (conv, BN, ...) and in blocks naming the pairs (``bn_pairs``: DeepLabv3's
    ResNet blocks)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in list(model.modules()):
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
        for conv, bn in getattr(block, "bn_pairs", ()):
            if isinstance(getattr(block, bn), nn.BatchNorm2d):
                setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
                setattr(block, bn, nn.Identity())
    return model


def split_head(model: nn.Module) -> nn.Module:
    """Replace ``head(cat(up(d2), e1))`` by ``up(head_d2(d2)) + head_e1(e1)`` (in place): the 1 x 1
    head's weights split by input channel; the same function (a 1 x 1 conv commutes with nearest
    upsampling), without upsampling 32 channels to full size and concatenating 64."""
    if isinstance(model, _EncoderDecoder) and model.split_head is None:
        head = model.head
        half = head.in_channels // 2
        low, skip = nn.Conv2d(half, 1, 1), nn.Conv2d(half, 1, 1, bias=False)
        with torch.no_grad():
            low.weight.copy_(head.weight[:, :half])
            low.bias.copy_(head.bias)
            skip.weight.copy_(head.weight[:, half:])
        model.split_head = nn.ModuleList([low, skip]).to(head.weight.device, head.weight.dtype)
    return model


# pixels per forward on the CPU: one 256 x 256 slice at a time is ~1.5x faster per slice than 8 at once
# (the activations stay in cache); smaller inputs (sliding windows) are grouped up to the same size
CPU_CHUNK_PIXELS = 256 * 256


def optimise_for_inference(model: nn.Module) -> nn.Module:
    """The shipped CPU/GPU inference path: eval mode, conv+BN folded, the head split
    (:func:`split_head`), channels-last memory, and on the CPU batches run in chunks of about one
    256 x 256 slice (:data:`CPU_CHUNK_PIXELS`: the activations stay in cache). Masks equal the
    eager model's (float32 round-off only; tested)."""
    import copy

    m = copy.deepcopy(model).eval()
    fuse_conv_bn(m)
    split_head(m)
    if isinstance(m, _EncoderDecoder):
        m.cpu_chunk_pixels = CPU_CHUNK_PIXELS
    for p in m.parameters():
        p.requires_grad_(False)
    return m.to(memory_format=torch.channels_last)
