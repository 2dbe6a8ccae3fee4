"""Backbones of the segmentation model: a CPU-sized ResNet and torchvision ResNets (SPEC §7).

Each returns the stride-4 low-level feature (layer1), the layer3 feature (input of the auxiliary
head) and the high-level feature (layer4) whose stride is the configured output stride.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

# Residual blocks per stage of the tiny backbone: one keeps the whole model at a few hundred
# thousand parameters so that a CPU training run fits in minutes.
TINY_BLOCKS: tuple[int, int, int, int] = (1, 1, 1, 1)

# Stages whose stride is replaced by dilation (layer2, layer3, layer4), as in DeepLab.
DILATE: dict[int, tuple[bool, bool, bool]] = {16: (False, False, True), 8: (False, True, True)}


def _conv(block: nn.Module, name: str) -> nn.Conv2d:
    """A block's conv by name (nn.Module attributes are untyped)."""
    return cast(nn.Conv2d, getattr(block, name))


def conv_bn_relu(
    cin: int, cout: int, k: int, dilation: int = 1, stride: int = 1, bias: bool = False
) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=bias),
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
        self.mid_channels = chans[2]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's ResNet initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init residual, as the authors' encoder kwargs ask
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(layer1, layer3, layer4) features: low-level, auxiliary-head input, high-level."""
        low = self.layer1(self.stem(x))
        mid = self.layer3(self.layer2(low))
        return low, mid, self.layer4(mid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, _, high = self.stages(x)
        return low, high


def _dilate_basic_layer(layer: nn.Sequential, previous: int, dilation: int) -> None:
    """Turn a strided layer of torchvision BasicBlocks into a dilated one in place.

    torchvision refuses dilation in BasicBlock, so resnet18 is built strided and converted:
    the conv that carried the stride keeps `previous`, every later 3×3 conv gets `dilation` —
    the rule torchvision's `replace_stride_with_dilation` applies to Bottleneck layers.
    """
    for i, block in enumerate(layer):
        convs = (_conv(block, "conv1"), _conv(block, "conv2"))
        for conv, d in zip(convs, (previous if i == 0 else dilation, dilation), strict=True):
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        downsample = cast(nn.Sequential | None, block.downsample)
        if downsample is not None:
            cast(nn.Conv2d, downsample[0]).stride = (1, 1)


def deep_stem() -> tuple[nn.Sequential, nn.BatchNorm2d]:
    """The paper's stem (SPEC §7): conv3×3(3→64, s2)-BN-ReLU, conv3×3(64→64)-BN-ReLU,
    conv3×3(64→128), then `bn1` (128) and ReLU outside the Sequential.

    The layout and names (`conv1.0`, `conv1.1`, `conv1.3`, `conv1.4`, `conv1.6`, `bn1`) are those
    of the deep-stem ResNets the SSS community's ImageNet checkpoints were saved from, so such a
    checkpoint loads key for key.
    """
    conv1 = nn.Sequential(
        resnet.conv3x3(3, 64, stride=2),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        resnet.conv3x3(64, 64),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        resnet.conv3x3(64, 128),
    )
    return conv1, nn.BatchNorm2d(128)


def _deep_layer1(block: type[resnet.BasicBlock | resnet.Bottleneck], blocks: int) -> nn.Sequential:
    """torchvision's layer1 rebuilt for the deep stem's 128 input channels (64 for the 7×7)."""
    width = 64 * block.expansion
    downsample = nn.Sequential(resnet.conv1x1(128, width), nn.BatchNorm2d(width))
    layers = [block(128, 64, downsample=downsample)]
    layers += [block(width, 64) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init_like_torchvision(modules: list[nn.Module]) -> None:
    """torchvision's ResNet initialisation with zero_init_residual, for rebuilt modules."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in module.modules():
            if isinstance(m, resnet.Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, resnet.BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def apply_multi_grid(layer4: nn.Sequential, dilation: int, grid: tuple[int, ...]) -> None:
    """DeepLab v3's multi-grid: block i's 3×3 conv gets dilation × grid[i] (padding equal).

    `dilation` is layer4's (2 at output stride 16, 4 at 8), so (1, 2, 4) gives 2/4/8 and 4/8/16,
    what the authors' code computes. The first block's conv follows the grid too, instead of
    torchvision's rule of keeping the previous stage's dilation there.
    """
    if len(grid) != len(layer4):
        raise ValueError(f"multi_grid {list(grid)} needs {len(layer4)} values, one per block")
    for block, g in zip(layer4, grid, strict=True):
        d = dilation * g
        conv2 = _conv(block, "conv2")
        conv2.dilation, conv2.padding = (d, d), (d, d)


class ResNetBackbone(nn.Module):
    """torchvision ResNet without avgpool/fc; low = layer1, mid = layer3, high = layer4.

    Submodule names equal torchvision's, so with the 7×7 stem a torchvision state dict minus
    `fc.*` loads with `strict=True`. With `stem="deep"` the 7×7 conv, its BN and layer1 (whose
    input grows from 64 to 128 channels) are replaced after construction and re-initialised,
    and the max-pool uses ceil mode, as in the paper's networks.
    """

    def __init__(
        self,
        name: str,
        output_stride: int,
        *,
        stem: str,
        multi_grid: tuple[int, int, int] | None,
    ) -> None:
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
        if stem == "deep":
            # Built after torchvision's net, so the 7×7 path's random init is left unchanged.
            net.conv1, net.bn1 = deep_stem()
            net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
            net.layer1 = _deep_layer1(type(net.layer1[0]), len(net.layer1))
            _init_like_torchvision([net.conv1, net.bn1, net.layer1])
        if multi_grid is not None:
            if name == "resnet18":
                raise ValueError("multi-grid is defined for Bottleneck ResNets, not resnet18")
            apply_multi_grid(net.layer4, 2 ** sum(dilate), multi_grid)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        expansion = 1 if name == "resnet18" else 4
        self.low_channels, self.high_channels = 64 * expansion, 512 * expansion
        self.mid_channels = 256 * expansion

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(layer1, layer3, layer4) features: low-level, auxiliary-head input, high-level."""
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        mid = self.layer3(self.layer2(low))
        return low, mid, self.layer4(mid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, _, high = self.stages(x)
        return low, high
