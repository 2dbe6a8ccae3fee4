"""The student as the training step runs it: channels-last weights, DistributedDataParallel,
torch.compile and bf16 autocast, each applied only when switched on (`SpeedConfig`).

`fit` keeps the plain student for everything that is not the gradient forward (the no-grad
forwards, the EMA teacher, evaluation and the weights it returns), so none of the wrappers
reaches a state dict.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import torch
from torch import Tensor, nn

from imas import distributed
from imas.config import SpeedConfig


class Autocast(nn.Module):
    """Runs `inner` under bf16 autocast and hands back float32 outputs, so softmax, hardness,
    confidences and losses downstream are computed in float32 whatever the forward ran in."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, ...]:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


def with_amp(module: nn.Module, speed: SpeedConfig, device: torch.device) -> nn.Module:
    """`module`'s forward under `speed.amp` (the module itself when amp is off)."""
    return module if speed.amp == "off" else Autocast(module, device.type)


class TrainingNet:
    """What the gradient forward calls, and the DDP wrapper (if any) behind it."""

    def __init__(self, forward: nn.Module, ddp: nn.Module | None) -> None:
        self.forward = forward
        self.ddp = ddp

    def grad_sync(self, sync: bool) -> AbstractContextManager:
        """Around a micro-batch's forward and backward: with `sync` false, DDP keeps the
        gradients local (the all-reduce waits for the step's last micro-batch)."""
        if self.ddp is None or sync:
            return nullcontext()
        return cast(nn.parallel.DistributedDataParallel, self.ddp).no_sync()


def prepare(
    student: nn.Module, speed: SpeedConfig, device: torch.device, *, find_unused: bool
) -> TrainingNet:
    """Apply `speed` to `student` (channels-last and SyncBatchNorm in place) and build the module
    its gradient forwards go through. `find_unused`: some parameters get no gradient (an
    auxiliary head without aux loss), which DDP must be told about."""
    if speed.channels_last:
        if device.type != "cuda":
            # Seen on this project's CI machine (torch 2.14.1, 1 thread): "corrupted size vs.
            # prev_size" and an abort in the backward of a stride-2 1×1 convolution, the
            # downsample of every ResNet block. A crash, or worse, wrong numbers: refuse.
            raise ValueError(
                "runtime.channels_last: true is a CUDA switch; on CPU torch's channels-last "
                "backward of a strided 1x1 convolution corrupted memory here. Set it to false"
            )
        student.to(memory_format=torch.channels_last)
    net = distributed.wrap(student, device, sync_bn=speed.sync_bn, find_unused=find_unused)
    ddp = net if net is not student else None
    if speed.compile:
        net = cast(nn.Module, torch.compile(net))
    return TrainingNet(with_amp(net, speed, device), ddp)
