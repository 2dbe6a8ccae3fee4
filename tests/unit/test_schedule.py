"""One continuous schedule (issue 17): a run placed inside a longer poly schedule, continuing a
warmup's SGD momentum; and the anti-iMAS signal and the collapse diagnostic of the step."""

from __future__ import annotations

import math

import pytest
import torch
from support.training import config, run_fit

import imas.train
from imas.train import Hooks, Plan, fit


def test_a_run_inside_a_schedule_takes_the_lr_of_its_global_iterations() -> None:
    cfg = config("supervised").model_copy(update={"lr": 0.1, "epochs": 2, "iters_per_epoch": 3})
    result, _ = run_fit(cfg, schedule=(4, 10))
    # Epoch means of lr = 0.1 · (1 − (4 + i) / 10) ** 0.9 for i = 0..2 and 3..5.
    for epoch, steps in ((0, range(0, 3)), (1, range(3, 6))):
        want = sum(0.1 * (1 - (4 + i) / 10) ** 0.9 for i in steps) / 3
        assert result.history[epoch]["lr"] == pytest.approx(want, rel=1e-12)


def test_a_schedule_without_room_for_the_run_is_refused() -> None:
    cfg = config("supervised")  # 2 epochs × 3 iterations
    with pytest.raises(ValueError, match="do not fit a schedule of 8"):
        run_fit(cfg, schedule=(3, 8))


def test_a_continued_run_starts_from_the_given_momentum_with_its_own_lr() -> None:
    cfg = config("supervised")
    first, _ = run_fit(cfg)
    assert first.optimizer is not None and first.optimizer["state"]
    seen: list[dict] = []

    class Spy(torch.optim.SGD):
        def step(self, closure=None):  # the state the first step of the continuation sees
            if not seen:
                state = self.state_dict()["state"]
                seen.append({k: v["momentum_buffer"].clone() for k, v in state.items()})
                seen.append({"lr": [g["lr"] for g in self.param_groups]})
            return super().step(closure)

    orig = torch.optim.SGD
    torch.optim.SGD = Spy  # type: ignore[misc]
    try:
        run_fit(cfg.model_copy(update={"lr": 0.5}), optimizer_state=first.optimizer)
    finally:
        torch.optim.SGD = orig  # type: ignore[misc]
    buffers = first.optimizer["state"]
    for index, buf in seen[0].items():
        assert torch.equal(buf, buffers[index]["momentum_buffer"])
    # This run's config rules the LR (0.5 at its iteration 0 of its own schedule), not the
    # saved state's.
    assert seen[1]["lr"] == [0.5, 0.5]


def test_fit_returns_the_optimizer_state_after_the_last_step() -> None:
    result, _ = run_fit(config("imas"))
    state = result.optimizer
    assert state is not None
    assert {g["name"] for g in state["param_groups"]} == {"backbone", "head"}
    assert all("momentum_buffer" in s for s in state["state"].values())


def _weights_seen(monkeypatch: pytest.MonkeyPatch, signal: str) -> list[torch.Tensor]:
    """The per-image weights the unsupervised loss receives, and the γ of those steps."""
    seen: list[torch.Tensor] = []
    real = imas.train.unsupervised_loss

    def spy(logits, target, conf, tau, weights=None):
        seen.append(weights.clone())
        return real(logits, target, conf, tau, weights)

    monkeypatch.setattr(imas.train, "unsupervised_loss", spy)
    cfg = config("imas", signal=signal, cutmix=False)
    result, _ = run_fit(cfg)
    return seen, result.hardness


@pytest.mark.parametrize("signal", ["easiness", "hardness"])
def test_anti_imas_reads_hardness_where_imas_reads_easiness(
    monkeypatch: pytest.MonkeyPatch, signal: str
) -> None:
    weights, hardness = _weights_seen(monkeypatch, signal)
    gammas = torch.tensor([g for epoch in hardness for g in epoch])
    used = torch.cat(weights)
    want = gammas if signal == "hardness" else 1.0 - gammas
    assert torch.allclose(used, want.to(used.dtype), atol=1e-6)


def test_the_logged_easiness_is_the_true_one_under_anti_imas() -> None:
    result, _ = run_fit(config("imas", signal="hardness"))
    for row, gammas in zip(result.history, result.hardness, strict=True):
        assert row["easiness"] == pytest.approx(1 - sum(gammas) / len(gammas), abs=1e-6)


def test_pure_background_counts_images_whose_pseudo_label_is_all_class_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A teacher that predicts background everywhere for the first image of each batch only.
    real = imas.train.F.softmax

    def softmax(x, dim):
        p = real(x, dim=dim)
        if x.requires_grad or p.shape[0] != 4:
            return p
        p = p.clone()
        p[0] = 0
        p[0, 0] = 1
        return p

    monkeypatch.setattr(imas.train.F, "softmax", softmax)
    result, _ = run_fit(config("mean_teacher"))
    for row in result.history:
        assert row["pure_background"] >= 0.25 - 1e-9
        assert math.isfinite(row["pure_background"])


def test_on_eval_numbers_join_the_history() -> None:
    calls: list[int] = []

    def hook(student, teacher, epoch):
        calls.append(epoch)
        assert teacher is not None
        return {"premise_spearman": 0.5 + epoch}

    result, _ = run_fit(config("imas"), on_eval=hook)
    assert calls == [0, 1]
    assert [row["premise_spearman"] for row in result.history] == [0.5, 1.5]


def test_schedule_options_stay_optional() -> None:
    # A run that continues nothing names none of them: its own schedule, fresh momentum.
    import inspect

    assert inspect.signature(fit).parameters["optimizer_state"].default is None
    plan, hooks = Plan(iters_per_epoch=1, strong_ops=0), Hooks(evaluate=lambda m: 0.0)
    assert plan.schedule is None and hooks.on_eval is None
