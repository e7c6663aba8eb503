"""Training: data in memory, one step per batch, validation, checkpoints, resume.

:func:`train` is what ``medcl train`` calls. The pieces it composes (:func:`load_training_data`,
:class:`Objective`, :func:`validate`) can be used alone.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import nibabel as nib
import torch

from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import PreparedCase, SliceSampler, load_case, select_scribbled
from .datasets import Dataset, discover
from .errors import ConfigError, DataError, MedclError
from .inference import Predictor
from .io import atomic_write_text
from .labels import LabelSpec
from .methods import build_objective
from .metrics import dice
from .models import build_model
from .preprocessing import PreprocessConfig
from .runtime import (FastForward, resolve_device, rng_state, seed_everything, set_rng_state,
                      set_threads)
from .schedule import LRSchedule
from .transforms import RandomAffine2D

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
#: options that may change when a run is resumed; all others must stay as saved.
RESUME_OVERRIDABLE = ("iterations", "max_minutes", "device", "num_threads", "val_interval",
                      "log_interval", "infer_batch_size", "precision", "channels_last")


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
    preprocess = PreprocessConfig(target_spacing=cfg.target_spacing, normalization=cfg.normalization)
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
    kwargs = {"name": cfg.model, "in_channels": spec.in_channels, "num_classes": spec.num_classes,
              "norm": cfg.norm, "dropout": cfg.dropout}
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


class _MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          callback: Callable[[dict], None] | None = None) -> dict:
    """Train a model with ``cfg.method``'s objective and write ``run_dir/{config.json, metrics.jsonl, checkpoints/}``.

    Args:
        cfg: the configuration (for ``resume``, see :func:`resume_config`).
        run_dir: output folder; must not hold a run unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt`` exactly where it stopped.
        callback: receives ``{"event": "step" | "val", ...}`` records (the CLI's progress bar).

    Returns:
        ``{"step", "elapsed_seconds", "best", "best_step", "last_val"}``.
    """
    run_dir = Path(run_dir)
    last_path = checkpoint_path(run_dir, "last")
    if resume and not last_path.is_file():
        raise DataError(f"{last_path}: nothing to resume")
    if not resume and (run_dir / CONFIG_NAME).exists():
        raise DataError(f"{run_dir}: already holds a run; pass --resume or choose another --out")
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    generator = seed_everything(cfg.seed)
    data, cfg = load_training_data(cfg)
    spec = data.spec
    kwargs = model_kwargs(cfg, spec)
    model = build_model(**kwargs).to(device)
    objective = build_objective(cfg, num_classes=spec.num_classes,
                                ignore_index=spec.ignore_index).to(device)
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    max_seconds = cfg.max_minutes * 60 if cfg.max_minutes else None
    schedule = LRSchedule(optimizer, kind=cfg.lr_schedule, base_lr=cfg.lr,
                          warmup_steps=cfg.warmup_steps, total_steps=cfg.iterations,
                          max_seconds=max_seconds)
    augment = RandomAffine2D(rotate_degrees=cfg.rotate_degrees,
                             scale_range=(cfg.scale_min, cfg.scale_max),
                             flip_prob=cfg.flip_prob, rot90=cfg.rot90)
    sampler = SliceSampler(data.train, crop_size=(cfg.crop_size, cfg.crop_size),
                           ignore_index=spec.ignore_index,
                           labelled_fraction=cfg.labelled_fraction, generator=generator)
    network = FastForward(model, precision=cfg.precision, channels_last=cfg.channels_last)
    predictor = Predictor(network, spec, data.preprocess, device=device,
                          batch_size=cfg.infer_batch_size)
    state = {"step": 0, "elapsed_seconds": 0.0, "best": None, "best_step": None, "last_val": None}
    if resume:
        ckpt = load_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"], generator)
        state.update({k: ckpt[k] for k in state if k in ckpt})
        log.info("resumed %s at step %d", last_path, state["step"])
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(cfg.to_dict(), indent=2) + "\n")
    metrics_log = _MetricsLog(run_dir / METRICS_NAME)
    emit = callback or (lambda record: None)

    def save(name: str) -> None:
        save_checkpoint(checkpoint_path(run_dir, name), {
            "model": model.state_dict(), "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "rng": rng_state(generator),
            "config": cfg.to_dict(), "label_spec": spec.to_dict(), "model_kwargs": kwargs,
            **state})

    def run_validation() -> None:
        if data.val:
            result = validate(predictor, data.val)
            score = result["mean_dice"]
        else:
            result, score = None, None
        state["last_val"] = result
        record = {"event": "val", "step": state["step"], "elapsed": state["elapsed_seconds"],
                  "mean_dice": score, "dice": result and result["dice"]}
        if score is None or state["best"] is None or score > state["best"]:
            state["best"], state["best_step"] = score, state["step"]
            save("best")
        save("last")
        metrics_log.write(record)
        emit(record)

    model.train()
    start = time.monotonic() - state["elapsed_seconds"]
    window_start, window_slices = time.monotonic(), 0
    validated_at = None
    while state["step"] < cfg.iterations:
        if max_seconds and state["elapsed_seconds"] >= max_seconds:
            log.info("wall-clock budget of %.1f min reached at step %d", cfg.max_minutes,
                     state["step"])
            break
        lr = schedule.step(state["step"], state["elapsed_seconds"])
        batch = sampler.sample(cfg.batch_size)
        batch["image"], batch["labels"] = augment(batch["image"], batch["labels"],
                                                  ignore_index=spec.ignore_index,
                                                  generator=generator)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss, terms = objective(network, batch, generator)
        if not torch.isfinite(loss):
            raise MedclError(f"loss became {loss.item()} at step {state['step']}; "
                             "lower --lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        state["elapsed_seconds"] = time.monotonic() - start
        window_slices += cfg.batch_size
        if state["step"] % cfg.log_interval == 0 or state["step"] == cfg.iterations:
            now = time.monotonic()
            record = {"event": "step", "step": state["step"], "total": cfg.iterations,
                      "elapsed": state["elapsed_seconds"], "budget": max_seconds, "lr": lr,
                      "slices_per_s": window_slices / max(now - window_start, 1e-9), **terms}
            window_start, window_slices = now, 0
            metrics_log.write(record)
            emit(record)
        if cfg.val_interval and state["step"] % cfg.val_interval == 0:
            run_validation()
            validated_at = state["step"]
            window_start, window_slices = time.monotonic(), 0
    if validated_at != state["step"]:
        run_validation()
    return dict(state)
