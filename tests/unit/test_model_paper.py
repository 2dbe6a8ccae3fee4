"""The paper-scale model (SPEC §7): deep stem, output stride 16/8 with multi-grid, aux head,
exact parameter counts, full-crop shapes and strict weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from support.paper_model import (
    AUX_1024_19,
    R50_CITYSCAPES_PARAMS,
    R50_DEEP_BACKBONE,
    R50_VOC_PARAMS,
    R101_DEEP_BACKBONE,
    R101_VOC_PARAMS,
    ROOT,
    _geometry,
    _torchvision_backbone,
    deep_backbone_from_torchvision,
    head_params,
    n_params,
    paper_cfg,
)
from torch import nn
from torchvision.models import resnet

from imas.backbone import ResNetBackbone
from imas.config import ModelConfig
from imas.model import build_model
from imas.weights import WeightsError, load_backbone_weights, load_pretrained

# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(backbone="tiny", stem="deep", multi_grid=None), "stem='deep'"),
        (dict(backbone="tiny", stem=None, multi_grid=(1, 2, 4)), "multi_grid"),
        (dict(backbone="resnet50", stem=None), "model.stem"),
        (dict(backbone="resnet18", multi_grid=(1, 2, 4)), "Bottleneck"),
        (dict(multi_grid=(1, 0, 4)), "≥ 1"),
        (dict(pretrained="imagenet"), "torchvision"),
    ],
)
def test_config_rejects_options_the_backbone_cannot_take(kw: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        paper_cfg(**kw)


def test_paper_deviation_is_the_torchvision_stem_on_a_resnet() -> None:
    assert paper_cfg(stem="torchvision").paper_deviation() == "torchvision-stem"
    assert paper_cfg("resnet18", stem="torchvision", multi_grid=None).paper_deviation()
    assert paper_cfg(stem="deep").paper_deviation() is None
    tiny = paper_cfg("tiny", stem=None, multi_grid=None)
    assert tiny.paper_deviation() is None


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (ROOT / "pipeline/config/presets").glob("*"))
)
def test_preset_model_sections_are_valid_paper_models(preset: str) -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["model"]
    overlay = yaml.safe_load((ROOT / "pipeline/config/presets" / f"{preset}.yaml").read_text())
    cfg = ModelConfig.model_validate({**base, **overlay["model"]})
    assert (cfg.stem, cfg.multi_grid, cfg.paper_deviation()) == ("deep", (1, 2, 4), None)
    assert cfg.aux_head == preset.startswith("cityscapes")


# --- structure ------------------------------------------------------------------------------


def test_deep_stem_structure() -> None:
    bb = build_model(paper_cfg("resnet101")).backbone
    convs = [m for m in bb.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 64, (3, 3), (2, 2), (1, 1)),
        (64, 64, (3, 3), (1, 1), (1, 1)),
        (64, 128, (3, 3), (1, 1), (1, 1)),
    ]
    assert [type(m) for m in bb.conv1] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2 + [nn.Conv2d]
    assert all(c.bias is None for c in convs)
    assert bb.bn1.num_features == 128
    pool = bb.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, True)
    assert bb.layer1[0].conv1.in_channels == 128
    assert bb.layer1[0].downsample[0].in_channels == 128
    assert bb.layer2[0].conv1.in_channels == 256  # the rest is torchvision's ResNet-101
    assert [len(layer) for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4)] == [3, 4, 23, 3]
    # The 7×7 stem stays what torchvision builds.
    tv = build_model(paper_cfg(stem="torchvision")).backbone
    assert tv.conv1.kernel_size == (7, 7) and not tv.maxpool.ceil_mode


@pytest.mark.parametrize(
    ("output_stride", "multi_grid", "layer3", "layer4"),
    [
        (16, (1, 2, 4), [(2, 1, 1)] + [(1, 1, 1)] * 5, [(1, 2, 2), (1, 4, 4), (1, 8, 8)]),
        (8, (1, 2, 4), [(1, 1, 1)] + [(1, 2, 2)] * 5, [(1, 4, 4), (1, 8, 8), (1, 16, 16)]),
        # Without multi-grid, torchvision's rule: the first block keeps the previous dilation.
        (16, None, [(2, 1, 1)] + [(1, 1, 1)] * 5, [(1, 1, 1), (1, 2, 2), (1, 2, 2)]),
        (8, None, [(1, 1, 1)] + [(1, 2, 2)] * 5, [(1, 2, 2), (1, 4, 4), (1, 4, 4)]),
    ],
)
def test_dilations_and_paddings_per_output_stride_and_multi_grid(
    output_stride: int, multi_grid, layer3: list, layer4: list
) -> None:
    bb = build_model(paper_cfg(output_stride=output_stride, multi_grid=multi_grid)).backbone
    assert _geometry(bb.layer3) == layer3
    assert _geometry(bb.layer4) == layer4
    assert bb.layer4[0].downsample[0].stride == (1, 1)
    assert bb.layer3[0].downsample[0].stride == ((2, 2) if output_stride == 16 else (1, 1))
    assert bb.layer2[0].conv2.stride == (2, 2)  # layer2 always strides


# --- parameter counts -----------------------------------------------------------------------


def test_exact_parameter_counts() -> None:
    r101 = build_model(paper_cfg("resnet101", 16, 21))
    assert n_params(r101.backbone) == R101_DEEP_BACKBONE
    assert deep_backbone_from_torchvision(resnet.resnet101) == R101_DEEP_BACKBONE
    assert n_params(r101) == R101_VOC_PARAMS == R101_DEEP_BACKBONE + head_params(21)
    r50_voc = build_model(paper_cfg("resnet50", 16, 21))
    assert n_params(r50_voc) == R50_VOC_PARAMS == R50_DEEP_BACKBONE + head_params(21)

    for os_ in (16, 8):
        r50 = build_model(paper_cfg("resnet50", os_, 19, aux_head=True))
        assert n_params(r50.backbone) == R50_DEEP_BACKBONE
        assert n_params(r50.aux) == AUX_1024_19 == 9 * 1024 * 256 + 512 + 256 * 19 + 19
        assert n_params(r50) == R50_CITYSCAPES_PARAMS
        assert R50_DEEP_BACKBONE + head_params(19) + AUX_1024_19 == R50_CITYSCAPES_PARAMS
    assert deep_backbone_from_torchvision(resnet.resnet50) == R50_DEEP_BACKBONE
    # The torchvision stem keeps torchvision's count exactly (minus the classifier).
    tv = build_model(paper_cfg("resnet50", stem="torchvision")).backbone
    assert n_params(tv) == n_params(resnet.resnet50()) - (2048 * 1000 + 1000)


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "output_stride", "size", "low", "high"),
    [
        ("resnet101", 16, 129, 33, 9),
        ("resnet50", 16, 129, 33, 9),
        ("resnet50", 8, 129, 33, 17),
    ],
)
def test_feature_strides(backbone: str, output_stride: int, size: int, low: int, high: int) -> None:
    torch.manual_seed(0)
    bb = build_model(paper_cfg(backbone, output_stride)).backbone.eval()
    with torch.no_grad():
        f_low, f_mid, f_high = bb.stages(torch.randn(1, 3, size, size))
    assert f_low.shape == (1, 256, low, low)  # stride 4
    assert f_mid.shape == (1, 1024, high, high)  # layer3: stride 16, or 8 when dilated
    assert f_high.shape == (1, 2048, high, high)


@pytest.mark.parametrize(
    ("backbone", "output_stride", "num_classes", "aux", "size"),
    [
        ("resnet101", 16, 21, False, 129),
        ("resnet50", 16, 19, True, 129),
        ("resnet50", 8, 19, True, 129),
    ],
)
def test_outputs_and_aux_at_input_size(
    backbone: str, output_stride: int, num_classes: int, aux: bool, size: int
) -> None:
    torch.manual_seed(0)
    model = build_model(paper_cfg(backbone, output_stride, num_classes, aux_head=aux)).eval()
    x = torch.randn(1, 3, size, size + 4)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (1, num_classes, size, size + 4)
        if aux:
            main, aux_logits = model(x, with_aux=True)
            assert torch.equal(main, logits)  # the aux head leaves the main output alone
            assert aux_logits.shape == (1, num_classes, size, size + 4)
        else:
            with pytest.raises(ValueError, match="no auxiliary head"):
                model(x, with_aux=True)


@pytest.mark.parametrize(
    ("backbone", "output_stride", "num_classes", "aux", "size", "low", "high"),
    [
        ("resnet101", 16, 21, False, 513, 129, 33),  # VOC crop
        ("resnet50", 16, 19, True, 769, 193, 49),  # Cityscapes crop
        ("resnet50", 8, 19, True, 769, 193, 97),
    ],
)
def test_output_shapes_at_full_crop_size(
    backbone: str, output_stride: int, num_classes: int, aux: bool, size: int, low: int, high: int
) -> None:
    """One forward at the paper's crop; hooks read the features the head receives (sizes of the
    form 4k + 1 divide evenly: 513 → 129 / 33, 769 → 193 / 49 or 97)."""
    torch.manual_seed(0)
    model = build_model(paper_cfg(backbone, output_stride, num_classes, aux_head=aux)).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name, module in [("low", model.low_conv), ("high", model.aspp), ("mid", model.aux)]:
        if module is not None:
            module.register_forward_hook(
                lambda m, args, out, name=name: seen.update({name: tuple(args[0].shape)})
            )
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(x, with_aux=True) if aux else (model(x),)
    assert [o.shape for o in out] == [(1, num_classes, size, size)] * len(out)
    assert seen["low"] == (1, 256, low, low)
    assert seen["high"] == (1, 2048, high, high)
    if aux:
        assert seen["mid"] == (1, 1024, high, high)


def test_aux_head_reads_layer3_and_trains_with_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(paper_cfg(num_classes=5, aux_head=True)).train()
    assert model.aux[0][0].in_channels == 1024 and model.aux[0][0].kernel_size == (3, 3)
    main, aux = model(torch.randn(2, 3, 33, 33), with_aux=True)
    (main.mean() + aux.mean()).backward()
    assert all(p.grad is not None for p in model.aux.parameters())
    assert not any(k.startswith("aux.") for k in build_model(paper_cfg()).state_dict())


# --- weights --------------------------------------------------------------------------------


def test_torchvision_state_dict_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = resnet.resnet50()  # random weights stand in for ImageNet's
    with torch.no_grad():
        for buf in source.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)  # BN statistics that differ from the defaults
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    bb = _torchvision_backbone()
    load_backbone_weights(bb, path)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    got = bb.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_missing_unexpected_and_misshapen_keys_are_named() -> None:
    state = resnet.resnet50().state_dict()
    missing = {k: v for k, v in state.items() if k != "conv1.weight"}
    with pytest.raises(WeightsError, match=r"missing backbone keys: conv1\.weight"):
        load_backbone_weights(_torchvision_backbone(), missing)
    bogus = {**state, "layer9.0.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"unexpected keys: layer9\.0\.weight"):
        load_backbone_weights(_torchvision_backbone(), bogus)
    wrong = {**state, "layer1.0.conv1.weight": torch.zeros(64, 32, 1, 1)}
    with pytest.raises(WeightsError, match=r"shape mismatch at layer1\.0\.conv1\.weight"):
        load_backbone_weights(_torchvision_backbone(), wrong)


def test_a_seven_by_seven_checkpoint_does_not_load_into_the_deep_stem() -> None:
    deep = ResNetBackbone("resnet50", 16, stem="deep", multi_grid=None)
    with pytest.raises(WeightsError) as err:
        load_backbone_weights(deep, resnet.resnet50().state_dict())
    text = str(err.value)
    assert "conv1.0.weight" in text and "conv1.6.weight" in text  # missing deep-stem convs
    assert "unexpected keys: conv1.weight" in text
    assert "shape mismatch at layer1.0.conv1.weight" in text  # 64 vs 128 input channels


def test_deep_stem_checkpoint_loads_through_the_config(tmp_path: Path) -> None:
    """A deep-stem checkpoint as the community ships it: conv1.{0,1,3,4,6}.*, bn1.*, layers,
    fc, saved by DataParallel under "state_dict"; older ones lack num_batches_tracked."""
    torch.manual_seed(3)
    source = ResNetBackbone("resnet50", 8, stem="deep", multi_grid=None)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["module.fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": state}, path)
    torch.manual_seed(4)
    cfg = paper_cfg("resnet50", 16, pretrained=str(path))
    model = build_model(cfg)  # random init, as build_model promises; loading is explicit
    assert not torch.equal(model.backbone.conv1[0].weight, source.conv1[0].weight)
    load_pretrained(model, cfg)
    got = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(got[key], value), key


def test_missing_file_and_imagenet_with_deep_stem_fail_clearly(tmp_path: Path) -> None:
    cfg = paper_cfg(pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="no such file"):
        load_pretrained(build_model(cfg), cfg)
    with pytest.raises(ValidationError, match="torchvision's weights"):
        paper_cfg(stem="deep", pretrained="imagenet")
