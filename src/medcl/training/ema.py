"""An exponential moving average (EMA) of the network's weights, validated and saved instead of
the raw weights when ``--ema-decay`` is set.

After every optimiser step ``w_ema <- decay * w_ema + (1 - decay) * w`` for every floating-point
parameter and buffer (BatchNorm running statistics included); integer buffers (BatchNorm's
``num_batches_tracked``) are copied. The average of the last ``~1 / (1 - decay)`` steps moves
less from one validation to the next than the raw weights do, so the checkpoint chosen on a
handful of validation volumes depends less on where in the noise a validation happened to land.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from medcl.errors import ConfigError


class WeightAverage:
    """The EMA copy of ``model`` (``module``), updated with :meth:`update`.

    Args:
        model: the network being trained; its copy starts equal to it.
        decay: in ``(0, 1)``; the weight of the old average at each update.
    """

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        averaged = list(self.module.parameters()) + list(self.module.buffers())
        current = list(model.parameters()) + list(model.buffers())
        for avg, now in zip(averaged, current, strict=True):
            if avg.is_floating_point():
                avg.lerp_(now.detach(), 1.0 - self.decay)
            else:
                avg.copy_(now)
