"""The one place where a :class:`~medcl.training.config.TrainConfig` becomes components:
the network's builder arguments, the objective, the augmentation and the slice sampler. Below
``training/`` nothing takes a configuration; everything takes typed keyword arguments.
"""

from __future__ import annotations

from medcl.data.labels import LabelSpec
from medcl.models import SAM_MODELS
from medcl.training.config import TrainConfig


def model_kwargs(cfg: TrainConfig, spec: LabelSpec) -> dict:
    kwargs = {"name": cfg.model, "in_channels": spec.in_channels, "num_classes": spec.num_classes}
    if cfg.model in SAM_MODELS:
        checkpoint = None if cfg.sam_checkpoint in (None, "none") else cfg.sam_checkpoint
        return {**kwargs, "checkpoint": checkpoint, "encoder": cfg.sam_encoder,
                "num_prompt_tokens": cfg.sam_prompt_tokens,
                "union_prompt": bool(cfg.prompt_consistency_weight),
                "cache_size": cfg.sam_cache_size, "resize": cfg.sam_resize}
    kwargs.update(norm=cfg.norm, dropout=cfg.dropout)
    if cfg.widths:
        kwargs["widths"] = list(cfg.widths)
    return kwargs
