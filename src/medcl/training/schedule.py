"""Learning-rate schedule over steps and, optionally, a wall-clock budget."""

from __future__ import annotations

import math

from torch.optim import Optimizer

from medcl.errors import ConfigError

LR_SCHEDULES = ("poly", "cosine", "constant")

POLY_POWER = 0.9
#: the sigmoid-shaped ramp ``exp(-RAMP_SHARPNESS (1 - t)^2)`` of Laine & Aila (2017), the usual
#: ramp-up of consistency weights in semi-supervised segmentation
RAMP_SHARPNESS = 5.0


def sigmoid_rampup(progress: float, start: float, length: float) -> float:
    """The ramp's value in ``[0, 1]`` at training ``progress``: 0 before ``start``, rising along
    ``exp(-5 (1 - t)^2)`` with ``t = (progress - start) / length``, 1 from ``start + length`` on.
    A ``length`` of 0 is a step from 0 to 1 at ``start``."""
    if progress < start:
        return 0.0
    if length <= 0 or progress >= start + length:
        return 1.0
    t = (progress - start) / length
    return math.exp(-RAMP_SHARPNESS * (1.0 - t) ** 2)


class LRSchedule:
    """Linear warm-up, then ``poly`` / ``cosine`` decay or a constant LR.

    Training progress is ``max(step / total_steps, elapsed / max_seconds)``, so with a wall-clock
    budget the decay ends when the budget does, whichever limit comes first. The schedule is a
    pure function of ``(step, elapsed)``, both stored in checkpoints, so resuming restores it.
    """

    def __init__(self, optimizer: Optimizer, *, kind: str, base_lr: float, warmup_steps: int,
                 total_steps: int, max_seconds: float | None = None) -> None:
        if kind not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr schedule {kind!r}; valid: {', '.join(LR_SCHEDULES)}")
        self.optimizer = optimizer
        self.kind = kind
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.max_seconds = max_seconds
        self.last_lr = base_lr

    def progress(self, step: int, elapsed: float) -> float:
        frac = step / self.total_steps
        if self.max_seconds:
            frac = max(frac, elapsed / self.max_seconds)
        return min(frac, 1.0)

    def lr_at(self, step: int, elapsed: float) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / (self.warmup_steps + 1)
        p = self.progress(step, elapsed)
        if self.kind == "poly":
            return self.base_lr * (1 - p) ** POLY_POWER
        if self.kind == "cosine":
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * p))
        return self.base_lr

    def step(self, step: int, elapsed: float) -> float:
        """Set the optimiser's LR for ``step`` and return it."""
        self.last_lr = self.lr_at(step, elapsed)
        for group in self.optimizer.param_groups:
            group["lr"] = self.last_lr
        return self.last_lr

    def state_dict(self) -> dict:
        return {"kind": self.kind, "base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "max_seconds": self.max_seconds,
                "last_lr": self.last_lr}

    def load_state_dict(self, state: dict) -> None:
        self.last_lr = state["last_lr"]
