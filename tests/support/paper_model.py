"""The paper-scale models' expected sizes: parameter counts of the heads and the deep-stem
backbones, and the params sections that build them."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from imas.backbone import ResNetBackbone
from imas.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]


# Exact parameter counts (deep stem, multi-grid 1/2/4, ASPP 256, low-level 48); an architecture
# change must update them on purpose. Dilation and multi-grid add no parameters.
R101_DEEP_BACKBONE = 42_623_936


R50_DEEP_BACKBONE = 23_631_808


# The authors' model built from their code (ZhenZHAO/iMAS @96e57e0) has these totals.
R101_VOC_PARAMS = 59_468_133  # 21 classes, no aux head


R50_VOC_PARAMS = 40_476_005  # 21 classes, no aux head


R50_CITYSCAPES_PARAMS = 42_840_182  # 19 classes, aux head on layer3


AUX_1024_19 = 2_364_691  # conv3×3 1024→256, BN, 1×1 256→19


def paper_cfg(
    backbone: str = "resnet50",
    output_stride: int = 16,
    num_classes: int = 19,
    *,
    stem: str = "deep",
    multi_grid: tuple[int, int, int] | None = (1, 2, 4),
    aux_head: bool = False,
    pretrained: str | None = None,
) -> ModelConfig:
    return ModelConfig(
        backbone=backbone,
        num_classes=num_classes,
        width=16,
        aspp_channels=256,
        aspp_rates=(6, 12, 18) if output_stride == 16 else (12, 24, 36),
        low_level_channels=48,
        output_stride=output_stride,
        stem=stem,
        multi_grid=multi_grid,
        pretrained=pretrained,
        aux_head=aux_head,
    )


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def head_params(num_classes: int, high: int = 2048, low: int = 256) -> int:
    """ASPP (pool, 1×1, three 3×3; projection) + low 1×1 48 + two 3×3 fuse convs + classifier,
    each conv followed by a BN (2·channels parameters), as the authors' decoder is written: bias
    only on the low-level 1×1 (`nn.Conv2d(256, 48, 1)`, PyTorch's default) and the classifier."""
    c, bn = 256, 512
    aspp = 2 * (high * c + bn) + 3 * (9 * high * c + bn) + (5 * c * c + bn)
    decoder = (low * 48 + 48 + 96) + (9 * (c + 48) * c + bn) + (9 * c * c + bn)
    return aspp + decoder + c * num_classes + num_classes


def deep_backbone_from_torchvision(factory) -> int:
    """torchvision's count without fc and the 7×7 stem, plus the deep stem and layer1's wider
    input (its first block's 1×1 conv and downsample read 128 channels instead of 64)."""
    fc = 2048 * 1000 + 1000
    stem7 = 7 * 7 * 3 * 64 + 2 * 64
    deep = 9 * (3 * 64 + 64 * 64 + 64 * 128) + 2 * (64 + 64 + 128)
    wider_layer1 = (128 - 64) * 64 + (128 - 64) * 256
    return n_params(factory()) - fc - stem7 + deep + wider_layer1


def _geometry(layer: nn.Sequential) -> list[tuple[int, int, int]]:
    """(stride, dilation, padding) of each block's 3×3 conv."""
    return [(b.conv2.stride[0], b.conv2.dilation[0], b.conv2.padding[0]) for b in layer]


def _torchvision_backbone() -> ResNetBackbone:
    return ResNetBackbone("resnet50", 16, stem="torchvision", multi_grid=(1, 2, 4))
