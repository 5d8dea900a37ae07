"""DeepLabv3 (Chen, Papandreou, Schroff & Adam 2017, "Rethinking Atrous Convolution for Semantic
Image Segmentation", arXiv:1706.05587), built the way torchvision's ``deeplabv3_resnet*`` is:
a ResNet backbone whose last stages trade stride for dilation, the Atrous Spatial Pyramid
Pooling head, a 1 x 1 classifier and bilinear upsampling to the input size. Written here because
torchvision cannot be installed beside this CPU torch; no pretrained weights (nothing can be
downloaded), so the stem takes the cohort's number of input sequences.

Backbone (:class:`ResNetBackbone`): the ResNet stem (7 x 7 conv stride 2, BatchNorm, ReLU, 3 x 3
max-pool stride 2: 1/4 resolution) and four stages of ResNet-18 basic blocks (two 3 x 3
conv-BN per block with an identity or 1 x 1-projection shortcut; ``BLOCKS`` = 2, 2, 2, 2) with
``base`` x 1/2/4/8 channels (ResNet-18: base 64). Stage 2 halves the resolution (1/8). For
output stride 8 (torchvision's choice for DeepLabv3) stages 3 and 4 keep stride 1 and dilate
their 3 x 3 convolutions instead (rates 2 and 4: the first block of a stage uses the previous
rate, as torchvision's ``replace_stride_with_dilation`` does); for output stride 16 only stage 4
is dilated (rate 2).

ASPP (:class:`ASPP`, paper §3.3): five parallel branches on the last stage's map, each ending in
BatchNorm + ReLU with ``aspp_channels`` outputs — a 1 x 1 conv, three 3 x 3 atrous convs at rates
(12, 24, 36) for output stride 8 or (6, 12, 18) for 16, and image pooling (global average,
1 x 1 conv, upsampled back bilinearly); concatenated, projected by a 1 x 1 conv + BN + ReLU and
dropout 0.5. Head (torchvision's ``DeepLabHead``): ASPP, 3 x 3 conv + BN + ReLU, 1 x 1 conv to
one logit channel; the logits are upsampled bilinearly to the input size. With deep supervision
the torchvision auxiliary ``FCNHead`` on stage 3 (3 x 3 conv to base·4/4 channels, BN, ReLU,
dropout 0.1, 1 x 1 conv) gives a second output during training.

Why ResNet-18 blocks at a reduced width: the full ResNet-50 (or even ResNet-18 at base 64) at
output stride 8 costs tens of GFLOPs per 256 x 256 slice — hours per epoch on two CPU cores —
and its 11-40 M parameters would not be a like-for-like comparison with CRFE. cervirad builds
ResNet-18 basic blocks and picks the ``base`` width whose parameter count is closest to CRFE's
with the same settings (:func:`matched_deeplab_base`), as it does for the U-Net, so the three
networks are compared at equal size. Output stride 8 is kept (torchvision's, and lesions of a
few millimetres survive 1/8 better than 1/16).

The network returns LOGITS (B, 1, H, W) like CRFE and the U-Net; any input size works (the
upsampling restores the input's height and width).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = (2, 2, 2, 2)  # ResNet-18
OUTPUT_STRIDES = (8, 16)
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}  # the paper's rates, doubled when the output stride halves


def _conv_bn_relu(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))."""

    bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))  # folded at inference (.model.fuse_conv_bn)

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, first_dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class ResNetBackbone(nn.Module):
    """ResNet-18-style stem and four stages; stages 3-4 (OS 8) or 4 (OS 16) dilated instead of strided.
    ``forward`` returns (stage-3 map, stage-4 map)."""

    def __init__(self, in_channels: int, base: int = 64, output_stride: int = 8):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base, 7, 2, padding=3, bias=False), nn.BatchNorm2d(base),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1))
        dilate = (False, False, output_stride == 8, True)  # stage 1 never strides; stages 3/4 per output stride
        stages, cin, rate = [], base, 1
        for i, (n, dil) in enumerate(zip(BLOCKS, dilate)):
            cout = base * 2 ** i
            prev = rate
            stride = 1 if i == 0 else 2
            if dil:
                rate, stride = rate * 2, 1
            blocks = [BasicBlock(cin, cout, stride, rate, first_dilation=prev)]
            blocks += [BasicBlock(cout, cout, 1, rate, rate) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin
        self.mid_channels = base * 4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.stages[1](self.stages[0](x))
        mid = self.stages[2](x)
        return mid, self.stages[3](mid)


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average, 1 x 1 conv + BN + ReLU, bilinear back to the map size."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1 x 1 conv, three 3 x 3 atrous convs at ``rates`` and image pooling, concatenated and projected."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, cout, 1), *(_conv_bn_relu(cin, cout, 3, r) for r in rates),
                                       ImagePooling(cin, cout)])
        self.project = nn.Sequential(_conv_bn_relu(cout * len(self.branches), cout, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], 1))


class DeepLabV3(nn.Module):
    """DeepLabv3 for one foreground class (module docstring); returns logits (B, 1, H, W)."""

    def __init__(self, in_channels: int = 1, base: int = 64, output_stride: int = 8, aspp_channels: int | None = None,
                 deep_supervision: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.deep_supervision = deep_supervision
        self.backbone = ResNetBackbone(in_channels, base, output_stride)
        c = aspp_channels or 4 * base  # torchvision: 256 for ResNet's base 64
        self.head = nn.Sequential(ASPP(self.backbone.out_channels, c, ASPP_RATES[output_stride]),
                                  _conv_bn_relu(c, c, 3), nn.Conv2d(c, 1, 1))
        if deep_supervision:  # torchvision's auxiliary FCNHead on stage 3
            mid = self.backbone.mid_channels
            self.aux = nn.Sequential(_conv_bn_relu(mid, mid // 4, 3), nn.Dropout(0.1), nn.Conv2d(mid // 4, 1, 1))

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        mid, top = self.backbone(x)
        out = F.interpolate(self.head(top), size=size, mode="bilinear", align_corners=False)
        if self.deep_supervision and self.training:
            return out, [F.interpolate(self.aux(mid), size=size, mode="bilinear", align_corners=False)]
        return out


def deeplab_parameters(in_channels: int, base: int, deep_supervision: bool = False, output_stride: int = 8) -> int:
    """Parameter count of a :class:`DeepLabV3` of ``base`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = DeepLabV3(in_channels, base, output_stride, deep_supervision=deep_supervision)
    return sum(p.numel() for p in net.parameters())


def matched_deeplab_base(target: int, in_channels: int = 1, deep_supervision: bool = False,
                         output_stride: int = 8) -> int:
    """The ``base`` width (a multiple of 4, 8 to 64) whose parameter count is closest to ``target``."""
    return min(range(8, 65, 4), key=lambda b: abs(deeplab_parameters(in_channels, b, deep_supervision,
                                                                      output_stride) - target))


__all__ = ["DeepLabV3", "ResNetBackbone", "ASPP", "BasicBlock", "matched_deeplab_base", "deeplab_parameters"]
