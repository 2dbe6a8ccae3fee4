"""The test model and data, and `fit` run on them: tiny in-memory training in milliseconds
a step (the loop's unit tests, the resume, DDP and speed tests)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from imas.config import TEACHER_STUDENT_ONLY, TRAIN_CONFIG, AdaptiveConfig, ModelConfig, TrainConfig
from imas.evaluate import evaluate
from imas.model import build_model
from imas.train import FitResult, Hooks, Plan, fit

MODEL = ModelConfig(
    backbone="tiny",
    num_classes=3,
    width=4,
    aspp_channels=8,
    aspp_rates=(1, 2, 3),
    low_level_channels=4,
    output_stride=8,
    stem=None,
    multi_grid=None,
    pretrained=None,
    aux_head=False,
)

AUX_MODEL = MODEL.model_copy(update={"aux_head": True})


class Squares(torch.utils.data.Dataset):
    """Uint8 images with a bright square (class 1) or dark square (class 2) on grey."""

    def __init__(self, n: int, labeled: bool, seed: int, augment: bool = False) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.full((n, 3, 16, 16), 128, dtype=torch.uint8)
        self.masks = torch.zeros(n, 16, 16, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(0, 8, (2,), generator=gen).tolist()
            cls = 1 + i % 2
            self.images[i, :, r : r + 8, c : c + 8] = 250 if cls == 1 else 5
            self.masks[i, r : r + 8, c : c + 8] = cls
        self.labeled = labeled
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, mask = self.images[i], self.masks[i]
        if self.augment:  # draws from all three global RNGs, as a real pipeline might
            if torch.rand(()) < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
            shift = random.randint(-20, 20) + int(np.random.randint(-20, 20))
            image = (image.int() + shift).clamp(0, 255).to(torch.uint8)
        return (image, mask) if self.labeled else image


class PixelNet(nn.Module):
    """Per-pixel classifier with a BatchNorm: all `fit` needs (a `.backbone`, logits at input
    size, buffers for the EMA; under DDP its running stats differ per rank unless averaged) at
    a cost of milliseconds per step."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def config(method: str, **adaptive) -> TrainConfig:
    switches = dict(
        intensity="mix",
        cutmix=True,
        cutmix_trigger="easiness",
        cutmix_prob=0.5,
        cutmix_pairing="easiness",
        loss_weight=True,
        scaled_magnitude=False,
        signal="easiness",
    )
    switches.update(adaptive)
    fields = dict(
        method=method,
        epochs=2,
        iters_per_epoch=3,
        batch_labeled=2,
        batch_unlabeled=4,
        accumulate=1,
        lr=0.01,
        head_lr_mult=1.0,
        weight_decay=1e-4,
        momentum=0.9,
        poly_power=0.9,
        eval_every=1,
        aux_weight=0.0,
        ohem=None,
        tau=0.5,
        lambda_u=1.0,
        ema_decay=0.99,
        ignore_index0=True,
        drop_weak_forward=False,
        adaptive=AdaptiveConfig(**switches),
    )
    if method == "supervised":  # no teacher: none of its knobs
        fields = {k: v for k, v in fields.items() if k not in TEACHER_STUDENT_ONLY}
    return TRAIN_CONFIG.validate_python(fields)


def fit_options(
    plan: dict[str, Any], hooks: dict[str, Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """`fit`'s Plan, Hooks and keyword arguments from one flat set of options (a test names
    only the ones it changes): Plan and Hooks fields go there, the rest to `fit` itself."""
    rest = dict(kwargs)
    plan = {**plan, **{k: rest.pop(k) for k in kwargs if k in Plan.__dataclass_fields__}}
    hooks = {**hooks, **{k: rest.pop(k) for k in kwargs if k in Hooks.__dataclass_fields__}}
    return {"plan": Plan(**plan), "hooks": Hooks(**hooks), **rest}


def run_fit(
    cfg: TrainConfig,
    seed: int = 0,
    model_cfg: ModelConfig = MODEL,
    n_labeled: int = 6,
    augment: bool = False,
    **fit_kwargs: Any,
):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = build_model(model_cfg)
    lab = torch.utils.data.DataLoader(
        Squares(n_labeled, True, 1, augment),
        batch_size=cfg.batch_labeled,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    unl = torch.utils.data.DataLoader(
        Squares(12, False, 2, augment),
        batch_size=cfg.batch_unlabeled,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    val = [(Squares(4, True, 3).images, Squares(4, True, 3).masks)]
    logged: list[tuple[dict, int]] = []
    result = fit(
        model,
        lab,
        unl,
        cfg,
        **fit_options(
            {"iters_per_epoch": cfg.iters_per_epoch, "strong_ops": 2, "log_every": 1},
            {
                "evaluate": lambda m: evaluate(m, val, 3)["miou"],
                "log": lambda m, s: logged.append((m, s)),
            },
            {"generator": torch.Generator().manual_seed(seed), **fit_kwargs},
        ),
    )
    return result, logged


def assert_same_result(a: FitResult, b: FitResult) -> None:
    assert a.history == b.history
    assert a.hardness == b.hardness
    assert (a.best_epoch, a.best_miou) == (b.best_epoch, b.best_miou)
    for kind in ("last", "best"):
        for who, weights in getattr(a, kind).items():
            other = getattr(b, kind)[who]
            assert (weights is None) == (other is None), (kind, who)
            for key, tensor in (weights or {}).items():
                assert torch.equal(tensor, other[key]), (kind, who, key)
