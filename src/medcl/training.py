"""Training: data in memory, one step per batch, validation, checkpoints, resume.

:func:`train` is what ``medcl train`` calls. The pieces it composes (:func:`load_training_data`,
:func:`validate`, :class:`medcl.trainer.Trainer`, the objectives of :mod:`medcl.methods`) can be
used alone.
"""

from __future__ import annotations

import logging
import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import nibabel as nib
import torch

from .checkpoint import checkpoint_path, load_checkpoint
from .config import TrainConfig
from .data import PreparedCase, SliceSampler, load_case, select_scribbled
from .datasets import Dataset, discover
from .errors import ConfigError, DataError
from .inference import Predictor
from .labels import LabelSpec
from .metrics import dice
from .models import SAM_MODELS
from .preprocessing import PreprocessConfig
from .runtime import set_threads

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
#: options that may change when a run is resumed; all others must stay as saved.
RESUME_OVERRIDABLE = ("iterations", "max_minutes", "device", "num_threads", "val_interval",
                      "log_interval", "infer_batch_size", "precision", "channels_last", "compile")


@dataclass
class TrainingData:
    """Preprocessed training and validation cases and the dataset's label definition."""

    spec: LabelSpec
    train: list[PreparedCase]
    val: list[PreparedCase]
    preprocess: PreprocessConfig


def median_inplane_spacing(dataset: Dataset) -> float:
    """Median in-plane voxel size (mm) of the training images, from their headers only."""
    sizes = []
    for case in dataset.cases("train"):
        zooms = nib.load(str(case.image_paths[0])).header.get_zooms()
        sizes.extend(float(z) for z in zooms[:2])
    return statistics.median(sizes)


def load_training_data(cfg: TrainConfig) -> tuple[TrainingData, TrainConfig]:
    """Discover and preprocess the data; returns it and ``cfg`` with ``target_spacing`` resolved."""
    dataset = discover(cfg.data, cfg.labels)
    if cfg.target_spacing is None:
        cfg = replace(cfg, target_spacing=round(median_inplane_spacing(dataset), 5))
        log.info("target spacing: median of the training images, %.5f mm", cfg.target_spacing)
    preprocess = PreprocessConfig(target_spacing=cfg.target_spacing, normalization=cfg.normalization,
                                  nonzero_mask=cfg.nonzero_mask)
    spec = dataset.spec
    scribbled = select_scribbled(dataset.cases("train"), num_scribbled=cfg.num_scribbled,
                                 scribbled_cases=cfg.scribbled_cases)
    train_cases = [load_case(c, spec, preprocess, labelled=c.case_id in scribbled)
                   for c in dataset.cases("train")]
    missing = [c.image_paths[0] for c in dataset.cases("train") if c.label_path is None]
    if missing:
        raise DataError(f"{missing[0]}: training case without a label file")
    val_cases = [load_case(c, spec, preprocess, keep_dense=True)
                 for c in dataset.cases("val") if c.label_path is not None]
    if not val_cases:
        log.warning("no labelled validation split: the best checkpoint will be the last one")
    log.info("training cases: %d scribbled, %d unlabelled; validation cases: %d",
             len(scribbled), len(train_cases) - len(scribbled), len(val_cases))
    return TrainingData(spec, train_cases, val_cases, preprocess), cfg


def validate(predictor: Predictor, cases: list[PreparedCase]) -> dict:
    """3D per-volume Dice of each foreground class, averaged over ``cases``.

    Returns ``{"dice": {class: mean}, "mean_dice": float, "cases": {case: {class: dice}}}``.
    """
    spec = predictor.spec
    per_case = {}
    for case in cases:
        probs = predictor.predict_volume(case.reference, slices=case.image)
        pred = probs.argmax(axis=-1)
        per_case[case.case_id] = {name: dice(pred == k, case.dense_labels == k)
                                  for k, name in enumerate(spec.class_names) if k > 0}
    names = spec.foreground_names
    means = {n: statistics.fmean(c[n] for c in per_case.values()) for n in names}
    return {"dice": means, "mean_dice": statistics.fmean(means.values()), "cases": per_case}


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


def resume_config(run_dir: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """The saved configuration of ``run_dir`` with the allowed ``overrides`` applied."""
    path = Path(run_dir) / CONFIG_NAME
    cfg = TrainConfig.from_file(path)
    overrides = overrides or {}
    bad = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE
                 and v != getattr(cfg, k, None))
    if bad:
        raise ConfigError(f"{path}: cannot change {bad} when resuming; allowed: "
                          f"{', '.join(RESUME_OVERRIDABLE)}")
    return replace(cfg, **overrides)


def train(cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          callback: Callable[[dict], None] | None = None) -> dict:
    """Train with ``cfg.method``'s objective; write ``run_dir/{config.json, metrics.jsonl,
    checkpoints/}``. Under ``torchrun`` every process calls this (see :mod:`medcl.distributed`).

    Args:
        cfg: the configuration (for ``resume``, see :func:`resume_config`).
        run_dir: output folder; must not hold a run unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt`` exactly where it stopped.
        callback: receives ``{"event": "step" | "val", ...}`` records (the CLI's progress bar).

    Returns:
        ``{"step", "elapsed_seconds", "best", "best_step", "last_val"}``.
    """
    from .trainer import Trainer

    run_dir = Path(run_dir)
    last_path = checkpoint_path(run_dir, "last")
    if resume and not last_path.is_file():
        raise DataError(f"{last_path}: nothing to resume")
    if not resume and (run_dir / CONFIG_NAME).exists():
        raise DataError(f"{run_dir}: already holds a run; pass --resume or choose another --out")
    set_threads(cfg.num_threads)
    data, cfg = load_training_data(cfg)
    trainer = Trainer(cfg, data, run_dir, callback=callback)
    if resume:
        trainer.restore(load_checkpoint(last_path))
        log.info("resumed %s at step %d", last_path, trainer.state["step"])
    return trainer.run()
