"""The one place where a :class:`~medcl.training.config.TrainConfig` becomes components: the
network's builder arguments, the objective, the augmentation and the slice sampler. Below
``training/`` nothing takes a configuration; everything takes typed keyword arguments.

The configuration has fewer knobs than the objective has terms; the mapping is explicit here:
``existence_weight`` weighs both existence terms (views and mixes); ``pce_weight`` also weighs the
union output's pCE; the prompt terms are on for SAM-family models only.
"""

from __future__ import annotations

import torch
from torch import nn

from medcl.data.labels import LabelSpec
from medcl.data.slices import PreparedCase, SliceSampler
from medcl.data.transforms import RandomAffine2D
from medcl.errors import ConfigError
from medcl.method.clustering import AnatomyClustering
from medcl.method.mixing import InterImageMix, IntraImageMix
from medcl.method.objectives import LossWeights, MedCLObjective, SupervisedObjective
from medcl.models import SAM_MODELS
from medcl.training.config import TrainConfig


def model_kwargs(cfg: TrainConfig, spec: LabelSpec) -> dict:
    """What :func:`medcl.models.build_model` needs to build (and a checkpoint to rebuild) the
    network."""
    kwargs = {"name": cfg.model, "in_channels": spec.in_channels, "num_classes": spec.num_classes}
    if cfg.model in SAM_MODELS:
        checkpoint = None if cfg.sam_checkpoint in (None, "none") else cfg.sam_checkpoint
        return {**kwargs, "checkpoint": checkpoint, "encoder": cfg.sam_encoder,
                "num_prompt_tokens": cfg.sam_prompt_tokens,
                "union_prompt": bool(cfg.prompt_consistency_weight),
                "cache_size": cfg.sam_cache_size, "resize": cfg.sam_resize,
                "decode_mode": cfg.sam_decode, "recompute": cfg.sam_recompute}
    kwargs.update(norm=cfg.norm, dropout=cfg.dropout)
    if cfg.widths:
        kwargs["widths"] = list(cfg.widths)
    return kwargs


def loss_weights(cfg: TrainConfig) -> LossWeights:
    """Every MedCL term's weight from the configuration's weights."""
    prompt = (cfg.prompt_consistency_weight or 0.0) if cfg.model in SAM_MODELS else 0.0
    return LossWeights(pce=cfg.pce_weight, dice=cfg.dice_weight, existence=cfg.existence_weight,
                       mix_pce=cfg.mix_pce_weight, mix_existence=cfg.existence_weight,
                       mix_consistency=cfg.mix_consistency_weight, prompt_consistency=prompt,
                       union_pce=cfg.pce_weight if prompt else 0.0, global_=cfg.global_weight,
                       local=cfg.local_weight)


def mix_space(cfg: TrainConfig) -> str:
    """Where MedCL mixes: ``auto`` is the embedding space for a frozen SAM encoder."""
    is_sam = cfg.model in SAM_MODELS
    if cfg.mix_space == "embedding" and not is_sam:
        raise ConfigError(f"mix_space='embedding' needs a SAM model ({', '.join(SAM_MODELS)}), "
                          f"got {cfg.model!r}")
    if cfg.mix_space == "auto":
        return "embedding" if is_sam and cfg.sam_encoder == "frozen" else "image"
    return cfg.mix_space


def build_objective(cfg: TrainConfig, *, num_classes: int, ignore_index: int) -> nn.Module:
    """The objective for ``cfg.method`` (``pce`` -> supervised, the others -> MedCL)."""
    if cfg.method == "pce":
        return SupervisedObjective(supervision=cfg.supervision, ignore_index=ignore_index,
                                   pce_weight=cfg.pce_weight, dice_weight=cfg.dice_weight)
    weights = loss_weights(cfg)
    intra = IntraImageMix(max_angle=cfg.intra_max_angle, box=cfg.intra_box,
                          box_min=cfg.intra_box_min, box_max=cfg.intra_box_max,
                          roi_margin=cfg.roi_margin, beta=cfg.mix_beta, blend=bool(cfg.intra_mix))
    inter = InterImageMix(partner=cfg.inter_partner, beta=cfg.mix_beta)
    clustering = None
    if weights.global_ or weights.local:
        clustering = AnatomyClustering(clustering=cfg.clustering, code_dim=cfg.code_dim,
                                       head=cfg.head, head_grid=cfg.head_grid,
                                       head_hidden=cfg.head_hidden,
                                       input_size=(cfg.crop_size, cfg.crop_size),
                                       temperature=cfg.temperature,
                                       num_prototypes=cfg.num_prototypes)
    return MedCLObjective(num_classes=num_classes, ignore_index=ignore_index, weights=weights,
                          intra=intra, inter=inter, clustering=clustering,
                          mix_space=mix_space(cfg), mix_views=cfg.mix_views,
                          mix_forward=cfg.mix_forward)


def build_augmentation(cfg: TrainConfig) -> RandomAffine2D:
    return RandomAffine2D(rotate_degrees=cfg.rotate_degrees,
                          scale_range=(cfg.scale_min, cfg.scale_max), flip_prob=cfg.flip_prob,
                          rot90=cfg.rot90)


def build_sampler(cfg: TrainConfig, cases: list[PreparedCase], *, ignore_index: int,
                  generator: torch.Generator) -> SliceSampler:
    return SliceSampler(cases, crop_size=(cfg.crop_size, cfg.crop_size), ignore_index=ignore_index,
                        labelled_fraction=cfg.labelled_fraction, generator=generator,
                        crop_mode=cfg.crop_mode, class_balance=cfg.class_balance)
