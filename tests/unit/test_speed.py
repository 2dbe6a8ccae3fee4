"""The speed switches of `fit` (runtime.amp, channels_last, compile) on CPU, and their wiring
from params."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from support.training import MODEL, assert_same_result, config, run_fit
from torch import nn

import imas.model
import imas.train
from imas.config import SpeedConfig
from imas.model import build_model
from imas.speed import prepare
from pipeline.config.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def _on(**switches: object) -> SpeedConfig:
    return SpeedConfig.off().model_copy(update=switches)


def spy_forwards(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, torch.dtype]]:
    """(autocast on, logits dtype) of every model forward."""
    seen: list[tuple[bool, torch.dtype]] = []
    real_forward = imas.model.DeepLabV3Plus.forward

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        out = real_forward(self, x, with_aux)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(imas.model.DeepLabV3Plus, "forward", forward)
    return seen


def test_bf16_autocast_trains_on_cpu_with_float32_hardness_and_losses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forwards = spy_forwards(monkeypatch)
    dtypes: list[torch.dtype] = []
    real_maps = imas.train.confidence_maps

    def confidence_maps(probs: torch.Tensor, tau: float):
        dtypes.append(probs.dtype)
        return real_maps(probs, tau)

    monkeypatch.setattr(imas.train, "confidence_maps", confidence_maps)
    real_unsup = imas.train.unsupervised_loss

    def unsupervised_loss(logits: torch.Tensor, *args: Any):
        dtypes.append(logits.dtype)
        return real_unsup(logits, *args)

    monkeypatch.setattr(imas.train, "unsupervised_loss", unsupervised_loss)
    result, logged = run_fit(config("imas"), speed=_on(amp="bf16"))

    # Per step the student's and the teacher's no-grad forwards and the gradient forward; the
    # caller's evaluation (after each epoch) runs as the caller chooses: here in float32.
    autocast = [dtype for on, dtype in forwards if on]
    assert autocast == [torch.bfloat16] * 3 * 6
    assert len(forwards) == len(autocast) + 2 * 2
    assert dtypes and set(dtypes) == {torch.float32}
    for row in result.history:
        assert all(math.isfinite(v) for v in row.values()), row
    assert all(0.0 <= v <= 1.0 for epoch in result.hardness for v in epoch)
    assert all(math.isfinite(m["step/loss"]) for m, _ in logged if "step/loss" in m)
    assert all(
        t.dtype == torch.float32 for t in result.last["student"].values() if t.is_floating_point()
    )


def test_amp_off_runs_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    forwards = spy_forwards(monkeypatch)
    run_fit(config("supervised").model_copy(update={"epochs": 1}))
    assert forwards and all(not on and dtype == torch.float32 for on, dtype in forwards)


def test_compile_wraps_the_training_forward_only(monkeypatch: pytest.MonkeyPatch) -> None:
    class Counted(nn.Module):
        """Stands in for the compiled module (compiling on CPU takes too long for a test)."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self.inner(*args, **kwargs)

    compiled: list[Counted] = []

    def fake_compile(module: nn.Module, **kwargs: Any) -> nn.Module:
        compiled.append(Counted(module))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = config("imas")
    plain, _ = run_fit(cfg)
    assert compiled == []  # off by default
    result, _ = run_fit(cfg, speed=_on(compile=True))
    [wrapper] = compiled
    assert isinstance(wrapper.inner, imas.model.DeepLabV3Plus)
    assert wrapper.calls == cfg.epochs * cfg.iters_per_epoch  # the one gradient forward a step
    assert_same_result(result, plain)  # the no-grad forwards and the EMA use the plain student


def test_channels_last_is_refused_on_cpu() -> None:
    # torch's CPU channels-last backward of a strided 1x1 conv corrupted the heap in CI.
    with pytest.raises(ValueError, match=r"runtime\.channels_last: true is a CUDA switch"):
        run_fit(config("imas"), speed=_on(channels_last=True))


def test_channels_last_converts_the_student_for_cuda() -> None:
    # No GPU here: `prepare` is called for a CUDA device but nothing runs, so the conversion
    # itself is what is checked (without a process group no CUDA call is made).
    model = build_model(MODEL)
    net = prepare(
        model,
        _on(channels_last=True),
        torch.device("cuda"),
        find_unused=False,
    )
    convs = [t for t in model.state_dict().values() if t.ndim == 4]
    assert convs and all(t.is_contiguous(memory_format=torch.channels_last) for t in convs)
    assert net.forward is model and net.ddp is None


def test_the_runtime_section_is_the_speed_config_fit_gets() -> None:
    # One model: runtime declares no speed field of its own, so nothing is copied on the way.
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params.runtime, SpeedConfig)
    fields = list(SpeedConfig.model_fields)
    off = SpeedConfig.off()
    # Every switch off in the repository's params.
    assert [getattr(params.runtime, f) for f in fields] == [getattr(off, f) for f in fields]
    switched = load_params(
        ROOT / "params.yaml",
        ["runtime.amp=bf16", "runtime.channels_last=true", "runtime.compile=true"],
    )
    assert [getattr(switched.runtime, f) for f in fields] == ["bf16", True, True, False]
