"""Model shapes, parameter groups and the EMA teacher contract (SPEC §6, §7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imas.config import ModelConfig
from imas.model import (
    DeepLabV3Plus,
    build_model,
    ema_decay,
    ema_update,
    make_teacher,
    param_groups,
)

# Exact parameter count of the tiny model below; an architecture change must update it on purpose.
TINY_PARAMS = 655_619  # with the low-level projection's bias (24), as the authors' decoder
TINY_BACKBONE_PARAMS = 307_824


def cfg(backbone: str = "tiny", output_stride: int = 8, **kw: object) -> ModelConfig:
    base = dict(
        backbone=backbone,
        num_classes=11,
        width=16,
        aspp_channels=64,
        aspp_rates=(2, 4, 6),
        low_level_channels=24,
        output_stride=output_stride,
        stem=None if backbone == "tiny" else "torchvision",
        multi_grid=None,
        pretrained=None,
        aux_head=False,
    )
    return ModelConfig(**{**base, **kw})


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("size", [(64, 64), (65, 47)])
def test_tiny_output_and_feature_strides(output_stride: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(cfg(output_stride=output_stride)).train()
    x = torch.randn(2, 3, *size)
    assert model(x).shape == (2, 11, *size)
    low, high = model.backbone(x)
    ceil = [-(-s // 4) for s in size]
    assert low.shape[1:] == (16, *ceil)
    for _ in range({8: 1, 16: 2}[output_stride]):  # stride-2 convs (pad 1) round up
        ceil = [-(-s // 2) for s in ceil]
    assert high.shape[1:] == (128, *ceil)


@pytest.mark.parametrize(
    ("backbone", "output_stride", "channels"),
    [("resnet18", 8, (64, 512)), ("resnet18", 16, (64, 512)), ("resnet50", 16, (256, 2048))],
)
def test_resnet_output_and_feature_strides(
    backbone: str, output_stride: int, channels: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    model = build_model(cfg(backbone, output_stride)).train()
    x = torch.randn(2, 3, 64, 48)
    assert model(x).shape == (2, 11, 64, 48)
    low, high = model.backbone(x)
    assert low.shape[1:] == (channels[0], 16, 12)
    assert high.shape[1:] == (channels[1], 64 // output_stride, 48 // output_stride)


def test_resnet18_dilation_follows_torchvision_rule() -> None:
    """The conv that carried the stride keeps the previous dilation; later 3×3 convs double."""
    bb = build_model(cfg("resnet18", 8)).backbone
    got = [
        (blk.conv1.stride[0], blk.conv1.dilation[0], blk.conv2.dilation[0])
        for layer in (bb.layer2, bb.layer3, bb.layer4)
        for blk in layer
    ]
    assert got == [(2, 1, 1), (1, 1, 1), (1, 1, 2), (1, 2, 2), (1, 2, 4), (1, 4, 4)]
    assert bb.layer3[0].downsample[0].stride == (1, 1)
    r50 = build_model(cfg("resnet50", 8)).backbone  # torchvision's own conversion, same rule
    got50 = [blk.conv2.dilation[0] for layer in (r50.layer3, r50.layer4) for blk in layer]
    assert got50 == [1] + [2] * 5 + [2, 4, 4]


def test_tiny_parameter_count() -> None:
    model = build_model(cfg())
    print(f"tiny model: {n_params(model)} parameters, backbone {n_params(model.backbone)}")
    assert n_params(model) == TINY_PARAMS
    assert n_params(model.backbone) == TINY_BACKBONE_PARAMS
    assert n_params(build_model(cfg(output_stride=16))) == TINY_PARAMS  # dilation adds none


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(cfg()).train()
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.randint(0, 11, (2, 32, 32))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_param_groups_cover_each_parameter_once() -> None:
    model = build_model(cfg())
    groups = param_groups(model, lr=0.01, head_lr_mult=10.0, weight_decay=1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert {id(p) for p in by_name["backbone"]["params"]} == {
        id(p) for p in model.backbone.parameters()
    }
    assert by_name["backbone"]["lr"] == by_name["backbone"]["base_lr"] == 0.01
    assert by_name["head"]["lr"] == by_name["head"]["base_lr"] == 0.01 * 10.0
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    assert [g["base_lr"] for g in opt.param_groups] == [0.01, 0.1]


def _trained_pair() -> tuple[DeepLabV3Plus, nn.Module]:
    """Teacher copied from a student that then took one SGD step (params and BN stats moved)."""
    torch.manual_seed(0)
    student = build_model(cfg(width=8, aspp_channels=16, low_level_channels=8))
    teacher = make_teacher(student)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    student.train()
    loss = F.cross_entropy(student(torch.randn(2, 3, 32, 32)), torch.randint(0, 11, (2, 32, 32)))
    loss.backward()
    opt.step()
    return student, teacher


def test_make_teacher_is_frozen_detached_copy() -> None:
    student, teacher = _trained_pair()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert not all(torch.equal(s_state[k], t_state[k]) for k in s_state)  # student moved alone


def test_ema_decay_zero_copies_bit_for_bit() -> None:
    student, teacher = _trained_pair()
    ema_update(teacher, student, 0.0)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert s_state.keys() == t_state.keys()
    for k in s_state:
        assert torch.equal(s_state[k], t_state[k]), k
        assert s_state[k].dtype == t_state[k].dtype, k


def test_ema_update_exact_on_hand_made_tensors() -> None:
    student, teacher = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    with torch.no_grad():  # dyadic values: d·t + (1−d)·s is exact in float32
        teacher.weight.copy_(torch.tensor([1.0, 2.0]))
        student.weight.copy_(torch.tensor([3.0, -1.0]))
        teacher.running_mean.copy_(torch.tensor([0.5, -4.0]))
        student.running_mean.copy_(torch.tensor([2.5, 4.0]))
    student.num_batches_tracked.fill_(7)
    d = 0.75
    t0, s0 = teacher.weight.detach().clone(), student.weight.detach().clone()
    m0 = teacher.running_mean.clone()
    ema_update(teacher, student, d)
    assert torch.equal(teacher.weight, d * t0 + (1 - d) * s0)
    assert torch.equal(teacher.weight, torch.tensor([1.5, 1.25]))
    assert torch.equal(teacher.running_mean, d * m0 + (1 - d) * student.running_mean)
    assert torch.equal(teacher.running_mean, torch.tensor([1.0, -2.0]))
    assert torch.equal(teacher.running_var, torch.ones(2))  # both ones: EMA keeps ones
    assert teacher.num_batches_tracked.item() == 7
    assert teacher.num_batches_tracked.dtype == torch.long


def test_ema_update_on_trained_model_follows_formula() -> None:
    student, teacher = _trained_pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    s_state = student.state_dict()
    for k, t in teacher.state_dict().items():
        if t.is_floating_point():
            torch.testing.assert_close(t, 0.9 * before[k] + 0.1 * s_state[k], rtol=0, atol=1e-6)
        else:
            assert torch.equal(t, s_state[k]), k
    assert "backbone.stem.1.running_mean" in s_state


def test_ema_update_rejects_different_structures() -> None:
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.5)


def test_ema_decay_schedule() -> None:
    iters, cap = 10, 0.996
    assert ema_decay(0, iters, cap) == 0.0
    assert ema_decay(iters - 1, iters, cap) == 0.0
    # The authors' rule: from epoch 1 on, min(1 − 1/(i + 1), cap) with i the global iteration.
    assert ema_decay(iters, iters, cap) == 1.0 - 1.0 / 11
    assert ema_decay(iters + 1, iters, cap) == 1.0 - 1.0 / 12
    assert ema_decay(248, iters, cap) == 1.0 - 1.0 / 249 < cap
    assert ema_decay(249, iters, cap) == cap  # 1 − 1/250 = 0.996 exactly
    assert ema_decay(10_000, iters, cap) == cap
    # An epoch of at least 249 iterations starts epoch 1 at the cap: no second ramp.
    assert ema_decay(249, 249, cap) == cap and ema_decay(300, 300, cap) == cap
    values = [ema_decay(s, iters, cap) for s in range(iters, 1000)]
    assert values == sorted(values)


def test_same_seed_same_weights_and_deterministic_forward() -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(build_model(cfg()).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(124)
    other = build_model(cfg()).state_dict()
    assert not torch.equal(states[0]["classifier.weight"], other["classifier.weight"])
    model = build_model(cfg()).train()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))  # no dropout: a train forward has no randomness


def test_ema_update_matches_the_per_tensor_rule_bit_for_bit() -> None:
    # ema_update batches the blend into multi-tensor ops; the result must be the same bits as
    # teacher.mul_(d).add_(student, alpha=1 - d) tensor by tensor.
    student, teacher = _trained_pair()
    expected = {k: v.clone() for k, v in teacher.state_dict().items()}
    for name, s in student.state_dict().items():
        if s.is_floating_point():
            expected[name].mul_(0.993).add_(s, alpha=1.0 - 0.993)
        else:
            expected[name].copy_(s)
    ema_update(teacher, student, 0.993)
    got = teacher.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert any(not torch.equal(got[k], v) for k, v in student.state_dict().items())
