"""Backbones of the segmentation model: a CPU-sized ResNet and torchvision ResNets (SPEC §7).

Each returns the stride-4 low-level feature (layer1), the layer3 feature (input of the auxiliary
head) and the high-level feature (layer4) whose stride is the configured output stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

# Residual blocks per stage of the tiny backbone: one keeps the whole model at a few hundred
# thousand parameters so that a CPU training run fits in minutes.
TINY_BLOCKS: tuple[int, int, int, int] = (1, 1, 1, 1)

# Stages whose stride is replaced by dilation (layer2, layer3, layer4), as in DeepLab.
DILATE: dict[int, tuple[bool, bool, bool]] = {16: (False, False, True), 8: (False, True, True)}


def conv_bn_relu(cin: int, cout: int, k: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; `dilation1` is for the conv that would carry the stride, `dilation2`
    for the conv after it, so a stride replaced by dilation keeps the strided net's geometry."""

    def __init__(self, cin: int, cout: int, stride: int, dilation1: int, dilation2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation1, dilation1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation2, dilation2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x), inplace=True)


class TinyBackbone(nn.Module):
    """CPU-sized ResNet: stem conv3×3 s2, then four basic-block stages of width·(1, 2, 4, 8).

    Stage 1 halves again, so its output is the stride-4 low-level feature (ResNet layer1); later
    strides are replaced by dilation until the high-level stride equals `output_stride`.
    """

    def __init__(self, width: int, output_stride: int) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, width, 3, stride=2)
        chans = [width, 2 * width, 4 * width, 8 * width]
        dilate = (False, *DILATE[output_stride])
        stages: list[nn.Module] = []
        cin, dilation = width, 1
        for cout, blocks, dil in zip(chans, TINY_BLOCKS, dilate, strict=True):
            previous, stride = dilation, 2
            if dil:
                dilation, stride = dilation * 2, 1
            layer = [BasicBlock(cin, cout, stride, previous, dilation)]
            layer += [BasicBlock(cout, cout, 1, dilation, dilation) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*layer))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.low_channels, self.high_channels = chans[0], chans[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's ResNet initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init residual, as the authors' encoder kwargs ask
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.stem(x))
        return low, self.layer4(self.layer3(self.layer2(low)))


def _dilate_basic_layer(layer: nn.Sequential, previous: int, dilation: int) -> None:
    """Turn a strided layer of torchvision BasicBlocks into a dilated one in place.

    torchvision refuses dilation in BasicBlock, so resnet18 is built strided and converted:
    the conv that carried the stride keeps `previous`, every later 3×3 conv gets `dilation` —
    the rule torchvision's `replace_stride_with_dilation` applies to Bottleneck layers.
    """
    for i, block in enumerate(layer):
        for conv, d in ((block.conv1, previous if i == 0 else dilation), (block.conv2, dilation)):
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class ResNetBackbone(nn.Module):
    """torchvision ResNet without avgpool/fc; low = layer1, high = layer4.

    Submodule names equal torchvision's, so a torchvision state dict minus `fc.*` loads with
    `strict=True`. Extension point: pretrained and deep-stem weights (SPEC §7) belong in a loader
    that replaces `conv1`/`bn1` by the deep stem and loads strictly; none is implemented yet.
    """

    def __init__(self, name: str, output_stride: int) -> None:
        super().__init__()
        dilate = list(DILATE[output_stride])
        if name == "resnet18":
            net = resnet.resnet18(weights=None, zero_init_residual=True)
            dilation = 1
            for layer, dil in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
                if dil:
                    _dilate_basic_layer(layer, dilation, dilation * 2)
                    dilation *= 2
        else:
            factory = {"resnet50": resnet.resnet50, "resnet101": resnet.resnet101}[name]
            net = factory(
                weights=None, zero_init_residual=True, replace_stride_with_dilation=dilate
            )
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        expansion = 1 if name == "resnet18" else 4
        self.low_channels, self.high_channels = 64 * expansion, 512 * expansion

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return low, self.layer4(self.layer3(self.layer2(low)))
