"""Pretrained backbone weights, loaded strictly (SPEC §7).

The peers load ImageNet checkpoints with `strict=False` and print the mismatches, so a checkpoint
of the other stem silently trains a random stem. Here every backbone key must be in the
checkpoint and every checkpoint key in the backbone (only the ImageNet classifier `fc.*` is
dropped), with equal shapes; otherwise loading fails and names the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn
from torchvision.models import resnet

from imas.config import ModelConfig

# torchvision's ImageNet weights (7×7 stem), fetched and cached by torchvision on first use.
IMAGENET = {
    "resnet18": resnet.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": resnet.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": resnet.ResNet101_Weights.IMAGENET1K_V1,
}


class WeightsError(ValueError):
    """A checkpoint does not fit the backbone; the message names the keys."""


def _listed(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … ({len(keys) - limit} more)" if len(keys) > limit else "")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file: a plain state dict, or one under "state_dict"/"model";
    a DataParallel "module." prefix on every key is removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"pretrained weights {path}: no such file")
    # weights_only: a checkpoint from the internet must not run code when unpickled.
    data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError(f"pretrained weights {path}: not a state dict of tensors")
    if data and all(k.startswith("module.") for k in data):
        data = {k.removeprefix("module."): v for k, v in data.items()}
    return data


def load_backbone_weights(backbone: nn.Module, source: Mapping[str, Tensor] | str | Path) -> None:
    """Load a state dict (or a checkpoint file) into `backbone`, strictly.

    Raises WeightsError listing missing and unexpected keys (`fc.*` is ignored), or naming each
    key whose shape differs. BatchNorm's `num_batches_tracked` counters may be absent (older
    checkpoints predate them; they are not weights and start at 0).
    """
    given = read_state_dict(source) if isinstance(source, str | Path) else dict(source)
    state = {k: v for k, v in given.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own.keys())
    problems = []
    if missing:
        problems.append(f"missing backbone keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    for key in sorted(state.keys() & own.keys()):
        if state[key].shape != own[key].shape:
            problems.append(
                f"shape mismatch at {key}: checkpoint {tuple(state[key].shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    if problems:
        stem = (
            " (a 7×7-stem checkpoint for a deep-stem model, or the reverse?)"
            if any(k.startswith(("conv1.", "bn1.")) for k in missing + unexpected)
            else ""
        )
        raise WeightsError(
            "pretrained weights do not fit the backbone" + stem + ":\n  " + "\n  ".join(problems)
        )
    backbone.load_state_dict(state, strict=True)


def load_pretrained(model: nn.Module, cfg: ModelConfig) -> None:
    """Load `cfg.pretrained` into `model.backbone`; nothing when it is null.

    "imagenet" is torchvision's IMAGENET1K_V1 checkpoint of the 7×7-stem ResNet (downloaded by
    torchvision into its cache); any other value is a local file, e.g. the deep-stem ImageNet
    checkpoints the semi-supervised segmentation papers use (`resnet101.pth`).
    """
    if cfg.pretrained is None:
        return
    if cfg.pretrained == "imagenet":
        if cfg.backbone not in IMAGENET or cfg.stem != "torchvision":
            raise WeightsError(
                f"pretrained='imagenet' exists for torchvision-stem ResNets, not backbone "
                f"{cfg.backbone!r} with stem {cfg.stem!r}"
            )
        # torch.hub loads with weights_only=False unless told otherwise: a tampered cache file
        # would run code. check_hash: the file's sha256 must start with the hash in its name.
        state = IMAGENET[cfg.backbone].get_state_dict(
            progress=False, check_hash=True, weights_only=True
        )
        load_backbone_weights(cast(nn.Module, model.backbone), state)
    else:
        load_backbone_weights(cast(nn.Module, model.backbone), cfg.pretrained)
