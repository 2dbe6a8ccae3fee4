"""DeepLabV3+ segmentation model, optimiser parameter groups and the EMA teacher (SPEC §6, §7).

The decoder follows the authors' released `dec_deeplabv3_plus` (U2PL lineage): ASPP branches are
concatenated, projected by a 1×1 conv, upsampled to the stride-4 low-level feature, fused by two
3×3 convs and classified by a 1×1 conv. Like the authors' code it has no dropout (their
`Dropout2d(0.1)` lines are commented out), which also keeps a training forward free of hidden
randomness. Known deviations from the paper's GPU setting: torchvision ResNets use the 7×7 stem
(not the deep stem) and no multi-grid (1, 2, 4) in layer4; there is no auxiliary head.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

from imas.config import ModelConfig

# Residual blocks per stage of the tiny backbone: one keeps the whole model at a few hundred
# thousand parameters so that a CPU training run fits in minutes.
TINY_BLOCKS: tuple[int, int, int, int] = (1, 1, 1, 1)

# Stages whose stride is replaced by dilation (layer2, layer3, layer4), as in DeepLab.
DILATE: dict[int, tuple[bool, bool, bool]] = {16: (False, False, True), 8: (False, True, True)}


def _conv_bn_relu(cin: int, cout: int, k: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
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
        self.stem = _conv_bn_relu(3, width, 3, stride=2)
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


class ASPP(nn.Module):
    """Image pooling + 1×1 + three dilated 3×3 branches, concatenated and projected by a 1×1."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout, 1))
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout, 1)] + [_conv_bn_relu(cin, cout, 3, r) for r in rates]
        )
        self.project = _conv_bn_relu(5 * cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Bilinear upsampling of a 1×1 map is a broadcast; expand says so without interpolating.
        feats = [self.pool(x).expand(-1, -1, h, w)] + [b(x) for b in self.branches]
        return self.project(torch.cat(feats, dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: backbone → ASPP on the high feature, fused with the stride-4 low feature.

    Training needs batch ≥ 2: the image-pooling branch has a BatchNorm over a 1×1 map.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone: TinyBackbone | ResNetBackbone
        if cfg.backbone == "tiny":
            self.backbone = TinyBackbone(cfg.width, cfg.output_stride)
        else:
            self.backbone = ResNetBackbone(cfg.backbone, cfg.output_stride)
        c = cfg.aspp_channels
        self.aspp = ASPP(self.backbone.high_channels, c, cfg.aspp_rates)
        self.low_conv = _conv_bn_relu(self.backbone.low_channels, cfg.low_level_channels, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(c + cfg.low_level_channels, c, 3), _conv_bn_relu(c, c, 3)
        )
        self.classifier = nn.Conv2d(c, cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes, H, W] at the input resolution."""
        low, high = self.backbone(x)
        low = self.low_conv(low)
        up = F.interpolate(self.aspp(high), low.shape[-2:], mode="bilinear", align_corners=True)
        logits = self.classifier(self.fuse(torch.cat([up, low], dim=1)))
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)


def build_model(cfg: ModelConfig) -> DeepLabV3Plus:
    """Randomly initialised model; seed torch beforehand for reproducible weights."""
    return DeepLabV3Plus(cfg)


def param_groups(
    model: DeepLabV3Plus, lr: float, head_lr_mult: float, weight_decay: float
) -> list[dict]:
    """SGD parameter groups: backbone at `lr`, everything else (ASPP, decoder) at lr·mult.

    Each group stores its undecayed rate under "base_lr" (and a "name"), so the poly schedule
    sets `g["lr"] = g["base_lr"] * (1 - it / max_it) ** power` without remembering the config.
    Weight decay applies to every parameter, BN and biases included, as in the authors' code.
    """
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    groups = [("backbone", backbone, lr), ("head", head, lr * head_lr_mult)]
    return [
        {"params": ps, "lr": rate, "base_lr": rate, "weight_decay": weight_decay, "name": name}
        for name, ps, rate in groups
    ]


def make_teacher(student: nn.Module) -> nn.Module:
    """Frozen copy of the student in eval mode (BN uses the EMA'd running statistics)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


def ema_decay(step: int, iters_per_epoch: int, cap: float) -> float:
    """EMA decay after global iteration `step` (counted from 0), as SPEC §6 states it.

    Epoch 0 (step < iters_per_epoch): 0, the teacher is a copy of the student. Afterwards
    min(1 − 1/(t + 1), cap) with t = step − iters_per_epoch, counted from the start of epoch 1
    (the U2PL-family rule 1 − 1/(i_iter − L·sup_only_epoch + 1) with one copy epoch), so the
    teacher follows the student closely for the first iterations of epoch 1 and reaches the cap
    after 1/(1 − cap) − 1 of them (249 for 0.996).
    """
    if step < iters_per_epoch:
        return 0.0
    return min(1.0 - 1.0 / (step - iters_per_epoch + 1), cap)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher ← decay·teacher + (1 − decay)·student for parameters and float buffers.

    BN running mean/var follow the EMA too (SPEC §6); integer buffers (num_batches_tracked) are
    copied. decay = 0 copies, so the teacher equals the student bit for bit.
    """
    pairs = [
        (dict(teacher.named_parameters()), dict(student.named_parameters())),
        (dict(teacher.named_buffers()), dict(student.named_buffers())),
    ]
    for t_named, s_named in pairs:
        if t_named.keys() != s_named.keys():
            raise ValueError("teacher and student have different structures")
        for name, t in t_named.items():
            s = s_named[name]
            if decay == 0.0 or not t.is_floating_point():
                t.copy_(s)
            else:
                t.mul_(decay).add_(s, alpha=1.0 - decay)
