"""The deep-stem ImageNet checkpoints the iMAS and UniMatch authors link load strictly (SPEC §7).

The expected key names and shapes are written out here from the authors' ResNet
(ZhenZHAO/iMAS imas/models/resnet.py, LiheYoung/UniMatch model/backbone/resnet.py), not read
from our model: a renamed or reshaped module of ours would otherwise move both sides at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor

from imas.backbone import ResNetBackbone
from imas.config import ModelConfig
from imas.model import build_model
from imas.weights import WeightsError, load_backbone_weights, load_pretrained

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
Shapes = dict[str, tuple[int, ...]]


def authors_keys(blocks: tuple[int, ...], stem: str = "deep") -> Shapes:
    """Every state-dict key of the authors' ResNet (classifier excluded) with its shape."""
    shapes: Shapes = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, k, k)  # conv3x3/conv1x1: bias=False

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    if stem == "deep":  # nn.Sequential: indices 2 and 5 are ReLUs, which hold no tensors
        conv("conv1.0", 64, 3, 3), bn("conv1.1", 64), conv("conv1.3", 64, 64, 3)
        bn("conv1.4", 64), conv("conv1.6", 128, 64, 3), bn("bn1", 128)
        inplanes = 128
    else:  # torchvision's 7×7 stem, the checkpoint the deep stem must refuse
        conv("conv1", 64, 3, 7), bn("bn1", 64)
        inplanes = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), 1):
        for b in range(n):
            p = f"layer{i}.{b}"
            conv(f"{p}.conv1", planes, inplanes, 1), bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", 4 * planes, planes, 1), bn(f"{p}.bn3", 4 * planes)
            if b == 0:  # inplanes != planes·4 on every first block, so each has a downsample
                conv(f"{p}.downsample.0", 4 * planes, inplanes, 1)
                bn(f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    return shapes


def checkpoint(shapes: Shapes, seed: int) -> dict[str, Tensor]:
    """Random tensors under the authors' names, plus the ImageNet classifier they ship."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + seed)  # 0-dim int64, unlike a fresh BN's 0
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)  # positive, unlike the init's 1
        else:  # conv weights scaled by fan-in so a forward stays finite through 101 layers
            fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    state["fc.weight"] = torch.randn(1000, 2048, generator=g)  # dropped by our loader
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def preset_cfg(arch: str, output_stride: int, pretrained: str | None = None) -> ModelConfig:
    """The model section of the paper preset at this stride (deep stem, multi-grid 1/2/4)."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["model"]
    preset = ROOT / f"pipeline/config/presets/cityscapes_r50_os{output_stride}.yaml"
    model = yaml.safe_load(preset.read_text())["model"]
    cfg = {**base, **model, "backbone": arch, "pretrained": pretrained}
    return ModelConfig.model_validate(cfg)


def assert_loaded(backbone: torch.nn.Module, state: dict[str, Tensor], shapes: Shapes) -> None:
    """Our keys are exactly the authors' set, and every one holds the checkpoint's tensor."""
    got = backbone.state_dict()
    assert set(got) == set(shapes), (sorted(set(got) - set(shapes)), sorted(set(shapes) - set(got)))
    differ = [k for k in shapes if k in state and not torch.equal(got[k], state[k])]
    assert not differ, differ


Saved = tuple[Path, dict[str, Tensor], Shapes]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Saved]:
    """resnet50.pth / resnet101.pth written once per module (170 MB for ResNet-101)."""
    files: dict[str, Saved] = {}

    def get(arch: str) -> Saved:
        if arch not in files:
            shapes = authors_keys(BLOCKS[arch])
            state = checkpoint(shapes, seed=0)
            path = tmp_path_factory.mktemp("pretrained") / f"{arch}.pth"
            torch.save(state, path)
            files[arch] = (path, state, shapes)
        return files[arch]

    return get


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_authors_checkpoint_loads_key_for_key(
    arch: str, output_stride: int, saved: Callable[[str], Saved]
) -> None:
    path, state, shapes = saved(arch)
    cfg = preset_cfg(arch, output_stride)
    assert (cfg.stem, cfg.multi_grid) == ("deep", (1, 2, 4))
    model = build_model(cfg).eval()
    load_backbone_weights(model.backbone, path)
    assert_loaded(model.backbone, state, shapes)
    with torch.no_grad():  # the loaded weights run: stride and dilation do not touch the keys
        logits = model(torch.randn(1, 3, 65, 65))
    assert logits.shape == (1, cfg.num_classes, 65, 65) and torch.isfinite(logits).all()


def test_checkpoint_file_variants_load(tmp_path: Path) -> None:
    """The wrappings released checkpoints come in, a new seed each so each load is visible.
    ResNet-50 only: unwrapping is per key, the same for 101's extra blocks."""
    shapes = authors_keys(BLOCKS["resnet50"])
    backbone = ResNetBackbone("resnet50", 16, stem="deep", multi_grid=(1, 2, 4))
    wrapped = checkpoint(shapes, seed=1)
    prefixed = checkpoint(shapes, seed=2)
    old = checkpoint(shapes, seed=3)
    variants = {
        "state_dict": ({"state_dict": wrapped}, wrapped),
        "module": ({f"module.{k}": v for k, v in prefixed.items()}, prefixed),
        "no_nbt": ({k: v for k, v in old.items() if "num_batches" not in k}, old),
    }
    for name, (payload, state) in variants.items():
        torch.save(payload, tmp_path / f"{name}.pth")
        load_backbone_weights(backbone, tmp_path / f"{name}.pth")
        if name == "no_nbt":  # older PyTorch wrote no counters: ours keep the previous ones
            state = {k: v for k, v in state.items() if "num_batches" not in k}
        assert_loaded(backbone, state, shapes)


def test_torchvision_stem_checkpoint_is_refused_naming_the_stem() -> None:
    seven = checkpoint(authors_keys(BLOCKS["resnet50"], stem="torchvision"), seed=4)
    backbone = ResNetBackbone("resnet50", 16, stem="deep", multi_grid=(1, 2, 4))
    with pytest.raises(WeightsError, match="7×7-stem checkpoint for a deep-stem model") as err:
        load_backbone_weights(backbone, seven)
    text = str(err.value)
    assert "conv1.0.weight" in text and "conv1.6.weight" in text  # the deep stem's convs
    assert "unexpected keys: conv1.weight" in text
    assert "shape mismatch at bn1.weight: checkpoint (64,), model (128,)" in text
    assert "shape mismatch at layer1.0.conv1.weight: checkpoint (64, 64, 1, 1)" in text
    assert "layer1.0.downsample.0.weight: checkpoint (256, 64, 1, 1)" in text


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_load_pretrained_reads_the_configured_file(
    arch: str, saved: Callable[[str], Saved]
) -> None:
    path, state, shapes = saved(arch)
    cfg = preset_cfg(arch, 16, pretrained=str(path))
    model = build_model(cfg)  # random init; load_pretrained is the explicit step
    assert not torch.equal(model.backbone.conv1[0].weight, state["conv1.0.weight"])
    load_pretrained(model, cfg)
    assert_loaded(model.backbone, state, shapes)
