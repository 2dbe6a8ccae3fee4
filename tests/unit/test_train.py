"""The one training loop on tiny in-memory data: determinism, switches, logging, EMA."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from support.training import (
    AUX_MODEL,
    MODEL,
    PixelNet,
    Squares,
    assert_same_result,
    config,
    run_fit,
)
from torch import nn

import imas.model
import imas.train
from imas.config import TRAIN_CONFIG, AdaptiveConfig, TrainConfig
from imas.data.transforms import normalize
from imas.model import build_model
from imas.train import Hooks, Plan, fit, resolve_iters_per_epoch


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


def test_hardness_is_recorded_per_image_and_averages_to_the_epoch_easiness() -> None:
    cfg = config("imas")
    result, _ = run_fit(cfg)
    per_epoch = cfg.iters_per_epoch * cfg.batch_unlabeled
    assert [len(values) for values in result.hardness] == [per_epoch] * cfg.epochs
    for values, row in zip(result.hardness, result.history, strict=True):
        assert all(0.0 <= v <= 1.0 for v in values)
        # Equal batches: the mean of the per-batch ē equals the mean over the epoch's images.
        assert sum(1.0 - v for v in values) / len(values) == pytest.approx(row["easiness"])
    supervised, _ = run_fit(config("supervised"))
    assert supervised.hardness == [[], []]


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
    _, logged = run_fit(config("imas", cutmix=False, cutmix_trigger="fixed", cutmix_prob=1.0))
    assert all(m["step/cutmix"] == 0.0 for m, _ in logged if "step/cutmix" in m)
    _, logged = run_fit(config("imas", cutmix_trigger="fixed", cutmix_prob=1.0))
    assert all(m["step/cutmix"] == 1.0 for m, _ in logged if "step/cutmix" in m)


def test_semi_method_needs_unlabeled_loader() -> None:
    with pytest.raises(ValueError, match="unlabeled loader"):
        fit(
            build_model(MODEL),
            [],
            None,
            config("imas"),
            Plan(iters_per_epoch=1, strong_ops=2),
            Hooks(evaluate=lambda m: 0.0),
            generator=torch.Generator(),
        )


def test_iters_per_epoch_is_one_unlabeled_pass() -> None:
    cfg = config("imas").model_copy(update={"iters_per_epoch": None, "batch_unlabeled": 8})
    assert resolve_iters_per_epoch(cfg, 100) == 12
    with pytest.raises(ValueError, match="batch_unlabeled=8"):
        resolve_iters_per_epoch(cfg, 5)


def fit_pixelnet(cfg: TrainConfig, student: nn.Module | None = None) -> list[torch.Tensor]:
    """Run `fit` on fixed batches (lists stand in for loaders); returns the unlabeled batches."""
    torch.manual_seed(0)
    lab, unl = Squares(4, True, 1), Squares(8, False, 2)
    labeled = [(lab.images[i : i + 2], lab.masks[i : i + 2]) for i in (0, 2)]
    unlabeled = [unl.images[i : i + 4] for i in (0, 4)]
    fit(
        student or PixelNet(),
        labeled,
        unlabeled,
        cfg,
        Plan(iters_per_epoch=cfg.iters_per_epoch, strong_ops=2),
        Hooks(evaluate=lambda m: 0.0),
        generator=torch.Generator().manual_seed(0),
    )
    return unlabeled


def test_fit_applies_the_ema_schedule_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    decays: list[float] = []
    real_update = imas.train.ema_update

    def spy(teacher: nn.Module, student: nn.Module, decay: float) -> None:
        decays.append(decay)
        real_update(teacher, student, decay)

    monkeypatch.setattr(imas.train, "ema_update", spy)
    update = {"epochs": 3, "iters_per_epoch": 2, "ema_decay": 0.7}
    fit_pixelnet(config("imas", cutmix=False).model_copy(update=update))
    # Epoch 0 copies; then min(1 − 1/(i + 1), cap) with i the global step (the released code).
    assert decays == [0.0, 0.0, 1 - 1 / 3, 0.7, 0.7, 0.7]


@pytest.mark.parametrize("iters", [2, 5])
def test_the_first_update_of_epoch_1_blends_with_the_global_iteration_rule(iters: int) -> None:
    # Resume states at every step give the models before and after each update: the teacher
    # after step L (epoch 1's first) is d·teacher + (1 − d)·student with d = 1 − 1/(L + 1).
    states: list[dict[str, Any]] = []
    cfg = config("imas", cutmix=False).model_copy(
        update={"epochs": 2, "iters_per_epoch": iters, "ema_decay": 0.99}
    )
    run_fit(cfg, checkpoint_every=1, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    by_step = {s["step"]: s for s in states}
    before, after = by_step[iters], by_step[iters + 1]
    d = min(1 - 1 / (iters + 1), 0.99)
    assert d == pytest.approx({2: 2 / 3, 5: 5 / 6}[iters])  # below the cap
    # Epoch 0 only copied: the teacher entering epoch 1 is the student.
    for key, value in before["teacher"].items():
        assert torch.equal(value, before["student"][key]), key
    changed = 0
    for key, teacher in after["teacher"].items():
        if not teacher.is_floating_point():
            assert torch.equal(teacher, after["student"][key]), key  # counters are copied
            continue
        expected = d * before["teacher"][key] + (1 - d) * after["student"][key]
        torch.testing.assert_close(teacher, expected, rtol=0, atol=1e-6)
        changed += not torch.equal(teacher, after["student"][key])
    assert changed > 0  # a blend, not a copy of the student


def test_strong_and_cutmix_views_are_made_from_the_loaders_weak_batch(
    monkeypatch: pytest.MonkeyPatch, pixel_net: PixelNet
) -> None:
    # Pixel alignment of û_s and u_w holds only if the strong view is computed from the very
    # weak tensor the loader produced (same crop/scale/flip), never from a second crop.
    seen: dict[str, list[tuple[tuple, Any]]] = {"strong": [], "mix": [], "cutmix": []}

    def recorder(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            seen[name].append((args, out))
            return out

        return wrapped

    monkeypatch.setattr(imas.train, "strong_view", recorder("strong", imas.train.strong_view))
    monkeypatch.setattr(imas.train, "mix_views", recorder("mix", imas.train.mix_views))
    monkeypatch.setattr(imas.train, "cutmix", recorder("cutmix", imas.train.cutmix))
    student = pixel_net
    inputs: list[torch.Tensor] = []
    student.register_forward_pre_hook(
        lambda m, args: inputs.append(args[0].clone()) if m.training else None
    )
    # τ = 0 and no class-0 rule: teacher ≡ student in epoch 0 gives γ = 0, so û_s is the full
    # strong view and differs from u_w (with e = 0 the checks below could not tell them apart).
    update = {"epochs": 1, "iters_per_epoch": 2, "tau": 0.0, "ignore_index0": False}
    cfg = config("imas", cutmix_trigger="fixed", cutmix_prob=1.0).model_copy(update=update)
    batches = fit_pixelnet(cfg, student)

    assert len(inputs) == len(batches)  # one training forward per step
    for step, weak8 in enumerate(batches):
        strong_args, strong8 = seen["strong"][step]
        assert torch.equal(strong_args[0], weak8)
        (mix_strong, mix_weak, _), mixed = seen["mix"][step]
        assert torch.equal(mix_weak, normalize(weak8))
        assert torch.equal(mix_strong, normalize(strong8))
        assert torch.equal(mixed, mix_strong) and not torch.equal(mixed, mix_weak)  # e = 1
        cm_args, cm_view = seen["cutmix"][step]
        assert torch.equal(cm_args[0], normalize(weak8))  # CutMix mixes the weak views
        # the one training forward: cat(x_l, u_w, u_cm, û_s)
        x = inputs[step]
        assert x.shape[0] == 2 + 3 * 4
        assert torch.equal(x[2:6], normalize(weak8))
        assert torch.equal(x[6:10], cm_view.images)
        assert torch.equal(x[10:], mixed)


def test_checkpoints_are_byte_stable_and_round_trip(tmp_path) -> None:
    from pipeline.training.checkpoints import load_checkpoint, save_checkpoint

    payload = {"best": {"student": build_model(MODEL).state_dict()}, "best_epoch": 3}
    save_checkpoint(tmp_path / "a.pt", payload)
    save_checkpoint(tmp_path / "sub" / "b.pt", payload)
    # Same weights, same bytes: DVC sees an unchanged output when a rerun reproduces it.
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded["best_epoch"] == 3
    for key, tensor in payload["best"]["student"].items():
        assert torch.equal(loaded["best"]["student"][key], tensor), key


def test_aux_weight_needs_a_model_with_an_aux_head() -> None:
    cfg = config("supervised").model_copy(update={"aux_weight": 0.4})
    with pytest.raises(ValueError, match="auxiliary head"):
        run_fit(cfg)


@pytest.mark.parametrize("method", ["supervised", "imas"])
def test_aux_loss_is_added_on_the_labeled_slice_of_the_one_forward(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards: list[tuple[int, bool]] = []  # (batch, with_aux) of each training forward
    real_forward = imas.model.DeepLabV3Plus.forward

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        if self.training:
            forwards.append((x.shape[0], with_aux))
        return real_forward(self, x, with_aux)

    losses: list[tuple[int, float]] = []  # (batch, value) of each supervised pixel loss
    real_loss = imas.train._pixel_loss

    def pixel_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        out = real_loss(logits, target, cfg)
        losses.append((logits.shape[0], float(out.detach())))
        return out

    monkeypatch.setattr(imas.model.DeepLabV3Plus, "forward", forward)
    monkeypatch.setattr(imas.train, "_pixel_loss", pixel_loss)
    update = {"aux_weight": 0.4, "epochs": 1}
    cfg = config(method, cutmix_trigger="fixed", cutmix_prob=1.0).model_copy(update=update)
    result, logged = run_fit(cfg, model_cfg=AUX_MODEL)

    batch = 2 if method == "supervised" else 2 + 3 * 4  # x_l, then u_w, u_cm, û_s
    assert forwards == [(batch, True)] * cfg.iters_per_epoch  # one forward per step
    assert [b for b, _ in losses] == [2, 2] * cfg.iters_per_epoch  # main, aux: labeled only
    for step, (metrics, _) in enumerate(logged[:-1]):
        main, aux = losses[2 * step][1], losses[2 * step + 1][1]
        assert metrics["step/loss_aux"] == pytest.approx(aux)
        assert metrics["step/loss_x"] == pytest.approx(main + 0.4 * aux)
    torch.manual_seed(0)  # the initial weights of run_fit's model
    start = build_model(AUX_MODEL).state_dict()
    trained = result.last["student"]
    assert not torch.equal(trained["aux.1.weight"], start["aux.1.weight"])


def test_aux_head_without_aux_weight_is_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real_forward = imas.model.DeepLabV3Plus.forward

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        seen.append(with_aux)
        return real_forward(self, x, with_aux)

    monkeypatch.setattr(imas.model.DeepLabV3Plus, "forward", forward)
    _, logged = run_fit(config("supervised"), model_cfg=AUX_MODEL)
    assert seen and not any(seen)
    assert "step/loss_aux" not in logged[0][0]


@pytest.mark.parametrize("aux", [False, True])
def test_ohem_replaces_the_supervised_cross_entropy(
    aux: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[float, int]] = []
    real_ohem = imas.train.ohem_loss

    def ohem(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int):
        calls.append((thresh, min_kept))
        return real_ohem(logits, target, thresh, min_kept)

    def plain(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("plain cross-entropy used despite train.ohem")

    monkeypatch.setattr(imas.train, "ohem_loss", ohem)
    monkeypatch.setattr(imas.train, "supervised_loss", plain)
    update = {"ohem": {"thresh": 0.6, "min_kept": 50}, "aux_weight": 0.4 if aux else 0.0}
    cfg = TRAIN_CONFIG.validate_python({**config("imas").model_dump(), **update})
    run_fit(cfg, model_cfg=AUX_MODEL if aux else MODEL)
    steps = cfg.epochs * cfg.iters_per_epoch
    assert calls == [(0.6, 50)] * steps * (2 if aux else 1)


@pytest.mark.parametrize("method", ["supervised", "mean_teacher", "imas"])
def test_resuming_from_any_checkpoint_finishes_bit_identically(method: str) -> None:
    """2 epochs × 3 steps; 2 labeled batches a pass, so states fall mid-pass, at a pass's end
    (steps 2, 4) and at an epoch's end (step 3, after its evaluation)."""
    torch.use_deterministic_algorithms(True)
    cfg = config(method)
    kwargs = {"n_labeled": 4, "augment": True}
    uninterrupted, logged = run_fit(cfg, **kwargs)

    saved: list[bytes] = []

    def keep(state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        saved.append(buf.getvalue())

    checkpointing, _ = run_fit(cfg, checkpoint_every=1, on_checkpoint=keep, **kwargs)
    assert_same_result(checkpointing, uninterrupted)  # writing states changes nothing
    total = cfg.epochs * cfg.iters_per_epoch
    assert len(saved) == total - 1  # steps 1 .. total-1
    for blob in saved:
        state = torch.load(io.BytesIO(blob), weights_only=True)
        # Rebuilt from scratch: run_fit reseeds every RNG, the state must move them on.
        resumed, resumed_log = run_fit(cfg, resume_state=state, **kwargs)
        assert_same_result(resumed, uninterrupted)
        step = state["step"]
        assert (
            resumed_log
            == [(m, s) for m, s in logged if s >= step or "epoch/loss" in m][-len(resumed_log) :]
        )


def test_resume_refuses_a_state_of_another_run_shape() -> None:
    states: list[dict[str, Any]] = []
    cfg = config("supervised")
    run_fit(cfg, checkpoint_every=4, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    with pytest.raises(ValueError, match="method='supervised'"):
        run_fit(config("imas"), resume_state=states[0])
    with pytest.raises(ValueError, match="total=6"):
        run_fit(cfg.model_copy(update={"epochs": 3}), resume_state=states[0])
    with pytest.raises(ValueError, match="on_checkpoint"):
        run_fit(cfg, checkpoint_every=2)


@pytest.mark.parametrize(
    ("trigger", "pairing", "fires", "paired_by"),
    [
        ("easiness", "easiness", None, "cutmix_partner"),
        ("fixed", "easiness", 1.0, "cutmix_partner"),  # trigger off, pairing kept
        ("easiness", "random", None, "random_partner"),  # pairing off, trigger kept
        ("fixed", "random", 1.0, "random_partner"),
    ],
)
def test_cutmix_trigger_and_pairing_are_separate_switches(
    monkeypatch: pytest.MonkeyPatch,
    trigger: str,
    pairing: str,
    fires: float | None,
    paired_by: str,
) -> None:
    calls: dict[str, int] = {"cutmix_partner": 0, "random_partner": 0}
    probabilities: list[float] = []
    for name in calls:
        real = getattr(imas.train, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(imas.train, name, counted)
    real_fires = imas.train._cutmix_fires

    def fires_spy(adaptive: AdaptiveConfig, mean_e: float, generator: torch.Generator) -> bool:
        probabilities.append(mean_e if adaptive.cutmix_trigger == "easiness" else -1.0)
        return real_fires(adaptive, mean_e, generator)

    monkeypatch.setattr(imas.train, "_cutmix_fires", fires_spy)
    # τ = 0, no class-0 rule: γ = 0 in epoch 0 (teacher ≡ student), so p = mean e = 1 fires too.
    update = {"epochs": 1, "iters_per_epoch": 3, "tau": 0.0, "ignore_index0": False}
    cfg = config(
        "imas", cutmix_trigger=trigger, cutmix_pairing=pairing, cutmix_prob=1.0
    ).model_copy(update=update)
    _, logged = run_fit(cfg)
    assert all(m["step/cutmix"] == 1.0 for m, _ in logged if "step/cutmix" in m)
    assert calls[paired_by] == 3 and sum(calls.values()) == 3
    assert probabilities == ([1.0] * 3 if fires is None else [-1.0] * 3)


def test_mean_teacher_turns_both_cutmix_switches_and_every_adaptive_part_off() -> None:
    cfg = config("mean_teacher", intensity="sample")
    effective = cfg.effective_adaptive()
    assert (effective.cutmix_trigger, effective.cutmix_pairing) == ("fixed", "random")
    assert effective.intensity == "strong" and not effective.loss_weight
    assert effective.cutmix and effective.cutmix_prob == cfg.adaptive.cutmix_prob
    assert not effective.uses_hardness  # no γ forward for the baseline
    off = config("mean_teacher", cutmix=False).effective_adaptive()
    assert off.cutmix is False


def test_sample_intensity_gives_each_image_its_strong_or_its_weak_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = imas.train.sample_views

    def spy(strong: torch.Tensor, weak: torch.Tensor, e: torch.Tensor, gen: Any) -> torch.Tensor:
        out = real(strong, weak, e, gen)
        seen.append((strong, weak, out))
        return out

    monkeypatch.setattr(imas.train, "sample_views", spy)
    monkeypatch.setattr(imas.train, "mix_views", None)  # must not be reached
    run_fit(config("imas", intensity="sample", cutmix=False))
    assert len(seen) == 2 * 3  # every step of both epochs
    for strong, weak, out in seen:
        for i in range(out.shape[0]):
            assert torch.equal(out[i], strong[i]) or torch.equal(out[i], weak[i])
