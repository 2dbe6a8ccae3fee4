"""DeepLabV3+ segmentation model, the optimiser (parameter groups, poly LR) and the EMA teacher
(SPEC §6, §7).

The decoder follows the authors' released `dec_deeplabv3_plus` (U2PL lineage): ASPP branches are
concatenated, projected by a 1×1 conv, upsampled to the stride-4 low-level feature (projected by
a 1×1 conv with bias, BN and ReLU), fused by two 3×3 convs and classified by a 1×1 conv. Like
the authors' code it has no dropout (their `Dropout2d(0.1)` lines are commented out), which also
keeps a training forward free of hidden randomness. The ResNets take the paper's deep stem or
torchvision's 7×7 stem (a deviation the tracking tags), optional multi-grid in layer4 and an
optional auxiliary head on layer3.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imas.backbone import ResNetBackbone, TinyBackbone, conv_bn_relu
from imas.config import ModelConfig, SupervisedConfig, TeacherStudentConfig


class ASPP(nn.Module):
    """Image pooling + 1×1 + three dilated 3×3 branches, concatenated and projected by a 1×1."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(cin, cout, 1))
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, r) for r in rates]
        )
        self.project = conv_bn_relu(5 * cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Bilinear upsampling of a 1×1 map is a broadcast; expand says so without interpolating.
        feats = [self.pool(x).expand(-1, -1, h, w)] + [b(x) for b in self.branches]
        return self.project(torch.cat(feats, dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: backbone → ASPP on the high feature, fused with the stride-4 low feature.

    With `aux_head`, an FCN head on layer3 (U2PL's `Aux_Module`: conv3×3 → BN → ReLU → 1×1
    classifier, no dropout) gives auxiliary logits for the supervised loss. `forward(x)` always
    returns the main logits only, so evaluation, prediction and the teacher never see the head.
    Training needs batch ≥ 2: the image-pooling branch has a BatchNorm over a 1×1 map.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone: TinyBackbone | ResNetBackbone
        if cfg.backbone == "tiny":
            self.backbone = TinyBackbone(cfg.width, cfg.output_stride)
        else:
            assert cfg.stem is not None  # ModelConfig requires one for a ResNet
            self.backbone = ResNetBackbone(
                cfg.backbone, cfg.output_stride, stem=cfg.stem, multi_grid=cfg.multi_grid
            )
        c = cfg.aspp_channels
        self.aspp = ASPP(self.backbone.high_channels, c, cfg.aspp_rates)
        # With a bias, as the authors' `nn.Conv2d(256, 48, 1)` has (PyTorch's default there):
        # redundant before a BN, but it is in their parameter count and weight decay.
        self.low_conv = conv_bn_relu(
            self.backbone.low_channels, cfg.low_level_channels, 1, bias=True
        )
        self.fuse = nn.Sequential(
            conv_bn_relu(c + cfg.low_level_channels, c, 3), conv_bn_relu(c, c, 3)
        )
        self.classifier = nn.Conv2d(c, cfg.num_classes, 1)
        # Created last and only when asked for: a model without it keeps the random init and
        # the state-dict keys it had before the head existed.
        self.aux: nn.Sequential | None = None
        if cfg.aux_head:
            self.aux = nn.Sequential(
                conv_bn_relu(self.backbone.mid_channels, c, 3), nn.Conv2d(c, cfg.num_classes, 1)
            )

    @overload
    def forward(self, x: Tensor, with_aux: Literal[False] = False) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, with_aux: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def forward(self, x: Tensor, with_aux: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits [B, num_classes, H, W] at the input resolution; with `with_aux`, also the
        auxiliary head's logits, upsampled the same way."""
        low, mid, high = self.backbone.stages(x)
        low = self.low_conv(low)
        up = F.interpolate(self.aspp(high), low.shape[-2:], mode="bilinear", align_corners=True)
        logits = self.classifier(self.fuse(torch.cat([up, low], dim=1)))
        logits = F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)
        if not with_aux:
            return logits
        if self.aux is None:
            raise ValueError("with_aux=True, but the model has no auxiliary head (aux_head)")
        aux = F.interpolate(self.aux(mid), x.shape[-2:], mode="bilinear", align_corners=True)
        return logits, aux


def build_model(cfg: ModelConfig) -> DeepLabV3Plus:
    """Randomly initialised model; seed torch beforehand for reproducible weights."""
    return DeepLabV3Plus(cfg)


def param_groups(
    model: nn.Module, lr: float, head_lr_mult: float, weight_decay: float
) -> list[dict]:
    """SGD parameter groups: backbone at `lr`, everything else (ASPP, decoder) at lr·mult.

    Each group stores its undecayed rate under "base_lr" (and a "name"), so the poly schedule
    sets `g["lr"] = g["base_lr"] * (1 - it / max_it) ** power` without remembering the config.
    Weight decay applies to every parameter, BN and biases included, as in the authors' code.
    """
    backbone = list(cast(nn.Module, model.backbone).parameters())
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
    """EMA decay after global iteration `step` (counted from 0 at the start of training), the
    authors' rule (SPEC §6).

    Epoch 0 (step < iters_per_epoch): 0, the teacher is a copy of the student. Afterwards
    min(1 − 1/(step + 1), cap): the released `1 − 1/(i_iter − L·sup_only_epoch + 1)` with
    `sup_only_epoch: 0` in every config, `i_iter` the global iteration. The first update of
    epoch 1 therefore already uses min(1 − 1/(L + 1), cap), the cap itself once an epoch has
    1/(1 − cap) − 1 iterations (249 for 0.996); there is no second ramp.
    """
    if step < iters_per_epoch:
        return 0.0
    return min(1.0 - 1.0 / (step + 1), cap)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher ← decay·teacher + (1 − decay)·student for parameters and float buffers.

    BN running mean/var follow the EMA too (SPEC §6); integer buffers (num_batches_tracked) are
    copied. decay = 0 copies, so the teacher equals the student bit for bit.
    """
    pairs: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = [
        (dict(teacher.named_parameters()), dict(student.named_parameters())),
        (dict(teacher.named_buffers()), dict(student.named_buffers())),
    ]
    blend_t: list[Tensor] = []
    blend_s: list[Tensor] = []
    for t_named, s_named in pairs:
        if t_named.keys() != s_named.keys():
            raise ValueError("teacher and student have different structures")
        for name, t in t_named.items():
            s = s_named[name]
            if decay == 0.0 or not t.is_floating_point():
                t.copy_(s)
            else:
                blend_t.append(t)
                blend_s.append(s)
    if blend_t:
        # One multi-tensor op per step instead of two ops per tensor (hundreds for a ResNet-101):
        # the same elementwise arithmetic, so the same bits.
        torch._foreach_mul_(blend_t, decay)
        torch._foreach_add_(blend_t, blend_s, alpha=1.0 - decay)


def make_optimizer(
    student: nn.Module,
    cfg: SupervisedConfig | TeacherStudentConfig,
    continued: dict[str, Any] | None,
) -> torch.optim.SGD:
    """SGD over the student's parameter groups; with `continued` (a previous run's state, not a
    resume), its momentum buffers under this run's LR and hyper-parameters."""
    optimizer = torch.optim.SGD(
        param_groups(student, cfg.lr, cfg.head_lr_mult, cfg.weight_decay),
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    if continued is not None:
        # A copy: SGD updates the loaded momentum buffers in place, and they would otherwise be
        # the caller's tensors.
        optimizer.load_state_dict(copy.deepcopy(continued))
        # The saved state carries its run's LR and hyper-parameters; this run's config rules.
        for group, fresh in zip(
            optimizer.param_groups,
            param_groups(student, cfg.lr, cfg.head_lr_mult, cfg.weight_decay),
            strict=True,
        ):
            group.update({k: v for k, v in fresh.items() if k != "params"})
            group["momentum"] = cfg.momentum
    return optimizer


def poly_lr(optimizer: torch.optim.Optimizer, step: int, total: int, power: float) -> float:
    """Set every group's LR to base_lr · (1 − step / total)^power (SPEC §6); the first group's."""
    factor = max(0.0, 1.0 - step / total) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]
