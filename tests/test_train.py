"""The one training loop on tiny in-memory data: determinism, switches, logging, EMA."""

from __future__ import annotations

import pytest
import torch

from imas.config import AdaptiveConfig, ModelConfig, TrainConfig
from imas.evaluate import evaluate
from imas.model import build_model
from imas.train import fit, resolve_iters_per_epoch

MODEL = ModelConfig(
    backbone="tiny",
    num_classes=3,
    width=4,
    aspp_channels=8,
    aspp_rates=(1, 2, 3),
    low_level_channels=4,
    output_stride=8,
)


class Squares(torch.utils.data.Dataset):
    """Uint8 images with a bright square (class 1) or dark square (class 2) on grey."""

    def __init__(self, n: int, labeled: bool, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.full((n, 3, 16, 16), 128, dtype=torch.uint8)
        self.masks = torch.zeros(n, 16, 16, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(0, 8, (2,), generator=gen).tolist()
            cls = 1 + i % 2
            self.images[i, :, r : r + 8, c : c + 8] = 250 if cls == 1 else 5
            self.masks[i, r : r + 8, c : c + 8] = cls
        self.labeled = labeled

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return (self.images[i], self.masks[i]) if self.labeled else self.images[i]


def config(method: str, **adaptive) -> TrainConfig:
    switches = dict(
        intensity=True, cutmix="adaptive", cutmix_prob=0.5, loss_weight=True, scaled_magnitude=False
    )
    switches.update(adaptive)
    return TrainConfig(
        method=method,
        epochs=2,
        iters_per_epoch=3,
        batch_labeled=2,
        batch_unlabeled=4,
        lr=0.01,
        head_lr_mult=1.0,
        weight_decay=1e-4,
        momentum=0.9,
        poly_power=0.9,
        eval_every=1,
        tau=0.5,
        lambda_u=1.0,
        ema_decay=0.99,
        ignore_index0=True,
        drop_weak_forward=False,
        adaptive=AdaptiveConfig(**switches),
    )


def run_fit(cfg: TrainConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(MODEL)
    lab = torch.utils.data.DataLoader(
        Squares(6, True, 1),
        batch_size=cfg.batch_labeled,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    unl = torch.utils.data.DataLoader(
        Squares(12, False, 2),
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
        strong_ops=2,
        iters_per_epoch=cfg.iters_per_epoch,
        evaluate_fn=lambda m: evaluate(m, val, 3)["miou"],
        generator=torch.Generator().manual_seed(seed),
        log=lambda m, s: logged.append((m, s)),
        log_every=1,
    )
    return result, logged


@pytest.mark.parametrize("method", ["supervised", "mean_teacher", "imas"])
def test_same_seed_same_numbers(method: str) -> None:
    torch.use_deterministic_algorithms(True)
    first, _ = run_fit(config(method))
    second, _ = run_fit(config(method))
    assert first.history == second.history
    for key, tensor in first.last["student"].items():
        assert torch.equal(tensor, second.last["student"][key]), key


def test_imas_logs_step_and_epoch_metrics() -> None:
    result, logged = run_fit(config("imas"))
    steps = [s for m, s in logged if "step/loss" in m]
    assert steps == list(range(6))
    step_keys = set(logged[0][0])
    assert {"step/loss_u", "step/easiness", "step/confident_ratio", "step/cutmix"} <= step_keys
    assert len(result.history) == 2
    assert {"miou_teacher", "miou_student", "easiness"} <= set(result.history[-1])
    assert 0 <= result.history[0]["easiness"] <= 1
    assert result.best["teacher"] is not None and result.best_epoch in (0, 1)


def test_teacher_equals_student_through_the_first_epoch() -> None:
    cfg = config("imas").model_copy(update={"epochs": 1})
    result, _ = run_fit(cfg)
    for key, tensor in result.last["student"].items():
        assert torch.equal(tensor, result.last["teacher"][key]), key


def test_different_seeds_differ() -> None:
    a, _ = run_fit(config("imas"), seed=0)
    b, _ = run_fit(config("imas"), seed=1)
    assert a.history != b.history


def test_cutmix_off_never_fires_and_fixed_one_always_fires() -> None:
    _, logged = run_fit(config("imas", cutmix="off"))
    assert all(m["step/cutmix"] == 0.0 for m, _ in logged if "step/cutmix" in m)
    _, logged = run_fit(config("imas", cutmix="fixed", cutmix_prob=1.0))
    assert all(m["step/cutmix"] == 1.0 for m, _ in logged if "step/cutmix" in m)


def test_semi_method_needs_unlabeled_loader() -> None:
    with pytest.raises(ValueError, match="unlabeled loader"):
        fit(
            build_model(MODEL),
            [],
            None,
            config("imas"),
            strong_ops=2,
            iters_per_epoch=1,
            evaluate_fn=lambda m: 0.0,
            generator=torch.Generator(),
        )


def test_iters_per_epoch_is_one_unlabeled_pass() -> None:
    cfg = config("imas").model_copy(update={"iters_per_epoch": None, "batch_unlabeled": 8})
    assert resolve_iters_per_epoch(cfg, 100) == 12
    with pytest.raises(ValueError, match="batch_unlabeled=8"):
        resolve_iters_per_epoch(cfg, 5)
