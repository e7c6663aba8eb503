"""The training loop: one object that owns the network, objective, optimiser, schedule,
sampler and random state of a run, and steps, validates and checkpoints it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medcl.errors import ConfigError, MedclError
from medcl.files import atomic_write_text
from medcl.inference.predictor import Predictor
from medcl.inference.window import inference_window
from medcl.method.objectives import MedCLObjective
from medcl.models import SAM_MODELS, build_model
from medcl.runtime import distributed
from medcl.runtime.checkpoint import (
    checkpoint_path,
    describe_network,
    load_weights,
    save_checkpoint,
)
from medcl.runtime.device import resolve_device
from medcl.runtime.precision import FastForward, resolve_precision
from medcl.runtime.rng import rng_state, seed_everything, set_rng_state
from medcl.training.components import (
    build_augmentation,
    build_objective,
    build_sampler,
    model_kwargs,
)
from medcl.training.config import RESOLVED_KEY, TrainConfig
from medcl.training.data import TrainingData
from medcl.training.ema import WeightAverage
from medcl.training.embeddings import precompute_embeddings
from medcl.training.init_from import InitSource
from medcl.training.interrupt import PeriodicSave, StopSignal, interrupted
from medcl.training.run_folder import CONFIG_NAME, METRICS_NAME
from medcl.training.schedule import LRSchedule, sigmoid_rampup
from medcl.training.selection import Selection, validate_checkpoint

log = logging.getLogger(__name__)

#: offset between the data generator's seed and each process's step generator's seed.
STEP_SEED_OFFSET = 1_000_003


class TrainStep(nn.Module):
    """Network + objective as one module, so one DistributedDataParallel wraps all parameters.

    ``forward(batch, generator) -> (loss, terms)``.
    """

    def __init__(self, network: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.objective = objective

    def forward(self, batch: dict, generator: torch.Generator):
        return self.objective(self.network, batch, generator)


class Trainer:
    """Trains one run.

    Two random streams: the *data* generator (same seed on every process, so all processes draw
    the same global batch) and the *step* generator (per process: mixing randomness of the
    objective). Both are saved in checkpoints.
    """

    def __init__(self, cfg: TrainConfig, data: TrainingData, run_dir: Path, *,
                 callback: Callable[[dict], None] | None = None) -> None:
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.dist = distributed.from_env()
        self.device = distributed.setup(self.dist, resolve_device(cfg.device))
        self.data_generator = seed_everything(cfg.seed)
        self.step_generator = torch.Generator().manual_seed(
            cfg.seed + STEP_SEED_OFFSET * (self.dist.rank + 1))
        spec = data.spec
        self.spec = spec
        self.model_kwargs = model_kwargs(cfg, spec)
        self.model = build_model(**self.model_kwargs)
        if cfg.sync_bn and self.dist.enabled:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        self.objective = build_objective(cfg, num_classes=spec.num_classes,
                                         ignore_index=spec.ignore_index).to(self.device)
        self.precision, self.precision_reason = resolve_precision(cfg.precision, self.device)
        log.info("training precision %s (%s)", self.precision, self.precision_reason)
        self.network = FastForward(self.model, precision=self.precision,
                                   channels_last=cfg.channels_last, compile=cfg.compile)
        step = TrainStep(self.network, self.objective)
        # the supervised warm-up leaves the objective's heads out of the graph
        has_heads = any(True for _ in self.objective.parameters())
        self.step_module = (DistributedDataParallel(
            step, find_unused_parameters=bool(cfg.supervised_warmup) and has_heads)
            if self.dist.enabled else step)
        params = list(self.model.parameters()) + list(self.objective.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.max_seconds = cfg.max_minutes * 60 if cfg.max_minutes else None
        self.schedule = LRSchedule(self.optimizer, kind=cfg.lr_schedule, base_lr=cfg.lr,
                                   warmup_steps=cfg.warmup_steps, total_steps=cfg.iterations,
                                   max_seconds=self.max_seconds)
        self.augment = build_augmentation(cfg)
        self.sampler = build_sampler(cfg, data.train, ignore_index=spec.ignore_index,
                                     generator=self.data_generator)
        self.ema = self.weight_average(cfg)
        evaluated = (self.network if self.ema is None else
                     FastForward(self.ema.module, precision=self.precision,
                                 channels_last=cfg.channels_last))
        self.predictor = Predictor(evaluated, spec, data.preprocess, device=self.device,
                                   batch_size=cfg.infer_batch_size,
                                   window=inference_window(self.model, crop_mode=cfg.crop_mode,
                                                           crop_size=cfg.crop_size))
        self.state = {"step": 0, "elapsed_seconds": 0.0, "best": None, "best_step": None,
                      "last_val": None}
        self.selection = Selection(cfg.selection)
        self.emit = callback if (callback and self.dist.is_main) else (lambda record: None)

    def weight_average(self, cfg: TrainConfig) -> WeightAverage | None:
        """The EMA of the weights that validation sees and checkpoints keep (``--ema-decay``)."""
        if not cfg.ema_decay:
            return None
        if cfg.model in SAM_MODELS:
            raise ConfigError(f"ema_decay is for networks without an embedding cache; "
                              f"{cfg.model!r} keeps one (its copy would be duplicated)")
        return WeightAverage(self.model, decay=cfg.ema_decay)

    # -- state --------------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        """The run's state; ``model`` holds the weights that predict (the EMA, with
        ``--ema-decay``; the raw weights it continues training from are ``train_model``)."""
        weights = ({"model": self.model.state_dict()} if self.ema is None else
                   {"model": self.ema.module.state_dict(),
                    "train_model": self.model.state_dict()})
        return {**weights, "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "rng": rng_state(self.data_generator),
                "step_generator": self.step_generator.get_state(),
                "config": self.cfg.to_dict(), "label_spec": self.spec.to_dict(),
                "model_kwargs": self.model_kwargs, "selection": self.selection.state_dict(),
                **self.state}

    def restore(self, ckpt: dict, *, source: str | os.PathLike = "checkpoint") -> None:
        """Continue from a checkpoint (written by any number of processes).

        Raises:
            DataError: naming ``source``, when its weights do not fit the network or the
                projection heads the configuration builds.
        """
        saved = ckpt.get("model_kwargs")
        fit = {"source": source, "what": describe_network(self.model_kwargs),
               "saved_for": saved if saved != self.model_kwargs else None}
        load_weights(self.model, ckpt.get("train_model", ckpt["model"]), **fit)
        if self.ema is not None:  # a run without EMA before: the average starts at its weights
            load_weights(self.ema.module, ckpt["model"], **fit)
        load_weights(self.objective, ckpt["objective"], source=source,
                     what="the objective's projection heads")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        set_rng_state(ckpt["rng"], self.data_generator)
        self.state.update({k: ckpt[k] for k in self.state if k in ckpt})
        self.selection.restore(ckpt)
        if self.dist.is_main and "step_generator" in ckpt:
            self.step_generator.set_state(ckpt["step_generator"])
        else:  # other processes: a fresh stream that depends on the step, not the world size
            self.step_generator.manual_seed(self.cfg.seed + STEP_SEED_OFFSET * (self.dist.rank + 1)
                                            + self.state["step"])

    def start_from(self, source: InitSource) -> None:
        """Start the network (and its average) from ``source``'s weights (``--init-from``);
        optimiser, schedule, step and random state stay fresh."""
        source.load_into(self.model, self.model_kwargs)
        if self.ema is not None:
            self.ema.module.load_state_dict(self.model.state_dict())

    def save(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(checkpoint_path(self.run_dir, name), self.checkpoint())

    def log(self, record: dict) -> None:
        if self.dist.is_main:
            with (self.run_dir / METRICS_NAME).open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.emit(record)

    # -- loop ---------------------------------------------------------------------------------
    def in_supervised_warmup(self) -> bool:
        """Whether the next step belongs to the ``supervised_warmup`` share of training."""
        return (isinstance(self.objective, MedCLObjective) and self.cfg.supervised_warmup > 0
                and self.schedule.progress(self.state["step"], self.state["elapsed_seconds"])
                < self.cfg.supervised_warmup)

    def medcl_scale(self) -> float:
        """The MedCL terms' weight factor for the next step: the ``medcl_rampup`` ramp from the
        end of the supervised warm-up (1 without a ramp-up)."""
        progress = self.schedule.progress(self.state["step"], self.state["elapsed_seconds"])
        return sigmoid_rampup(progress, self.cfg.supervised_warmup, self.cfg.medcl_rampup)

    def next_batch(self, *, labelled_only: bool = False) -> dict:
        """This process's shard of the global batch, augmented, on the device."""
        cfg, world, rank = self.cfg, self.dist.world_size, self.dist.rank
        batch = self.sampler.sample(cfg.batch_size * world, labelled_only=labelled_only)
        if not self.augment.is_identity:  # resampling would change bits a cache keys on
            batch["image"], batch["labels"] = self.augment(batch["image"], batch["labels"],
                                                           ignore_index=self.spec.ignore_index,
                                                           generator=self.data_generator)
        shard = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
        return {k: v[shard].to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self) -> tuple[float, dict]:
        lr = self.schedule.step(self.state["step"], self.state["elapsed_seconds"])
        warmup = self.in_supervised_warmup()
        medcl = isinstance(self.objective, MedCLObjective)
        if medcl:
            if self.objective.supervised_only and not warmup:
                log.info("supervised warm-up ended at step %d (%.1f min)", self.state["step"],
                         self.state["elapsed_seconds"] / 60)
            self.objective.supervised_only = warmup
            self.objective.medcl_scale = self.medcl_scale()
        loss, terms = self.step_module(self.next_batch(labelled_only=warmup), self.step_generator)
        if medcl and self.cfg.medcl_rampup:
            terms["medcl_scale"] = self.objective.medcl_scale
        if not torch.isfinite(loss):
            raise MedclError(f"loss became {loss.item()} at step {self.state['step']}; "
                             "lower --lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return lr, terms

    def validate(self) -> None:
        """Validate on rank 0, log, and write ``best``/``last`` checkpoints: ``best`` where the
        configured rule's score rises (:mod:`medcl.training.selection`; without validation
        cases, every time)."""
        if self.dist.is_main:
            step, names = self.state["step"], self.spec.class_names
            result = (validate_checkpoint(self.predictor, self.data.val,
                                          search=self.cfg.postprocessing == "auto")
                      if self.data.val else None)
            record = (result.record(self.selection.rule, names) if result else
                      {"mean_dice": None, "dice": None})
            self.state["last_val"] = record
            if result is None or self.selection.update(result.candidate(step, names)):
                self.state["best"], self.state["best_step"] = record["mean_dice"], step
                self.save("best")
            self.save("last")
            if result is not None:
                self.selection.write(self.run_dir)
            self.log({"event": "val", "step": step, "elapsed": self.state["elapsed_seconds"],
                      **record})
        distributed.barrier()

    def run(self, stop: StopSignal | None = None) -> dict:
        """Train to ``iterations`` (or the budget), validating and checkpointing on the way.

        Raises:
            Interrupted: once ``stop`` has seen SIGTERM/SIGINT, after ``last.pt`` was saved.
        """
        cfg, state = self.cfg, self.state
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            resolved = {"precision": self.precision, "precision_reason": self.precision_reason}
            atomic_write_text(self.run_dir / CONFIG_NAME, json.dumps(
                {**cfg.to_dict(), RESOLVED_KEY: resolved}, indent=2) + "\n")
        precompute_embeddings(self)  # a frozen encoder: every slice encoded once, off the clock
        self.model.train()
        start = time.monotonic() - state["elapsed_seconds"]
        window_start, window_slices = time.monotonic(), 0
        validated_at = None
        autosave = PeriodicSave(cfg.checkpoint_minutes, state["elapsed_seconds"])
        try:
            while state["step"] < cfg.iterations:
                if self.max_seconds and state["elapsed_seconds"] >= self.max_seconds:
                    log.info("wall-clock budget of %.1f min reached at step %d",
                             cfg.max_minutes, state["step"])
                    break
                lr, terms = self.train_step()
                state["step"] += 1
                # rank 0's clock drives the schedule and the budget on every process
                state["elapsed_seconds"] = distributed.broadcast_float(time.monotonic() - start,
                                                                       self.device)
                window_slices += cfg.batch_size * self.dist.world_size
                if state["step"] % cfg.log_interval == 0 or state["step"] == cfg.iterations:
                    now = time.monotonic()
                    self.log({"event": "step", "step": state["step"], "total": cfg.iterations,
                              "elapsed": state["elapsed_seconds"], "budget": self.max_seconds,
                              "lr": lr,
                              "slices_per_s": window_slices / max(now - window_start, 1e-9),
                              **terms})
                    window_start, window_slices = now, 0
                if cfg.val_interval and state["step"] % cfg.val_interval == 0:
                    self.validate()
                    validated_at = state["step"]
                    autosave.saved(state["elapsed_seconds"])
                    window_start, window_slices = time.monotonic(), 0
                elif autosave.due(state["elapsed_seconds"]):
                    self.save("last")
                    autosave.saved(state["elapsed_seconds"])
                signum = stop.agreed(self.device) if stop is not None else None
                if signum is not None:
                    self.save("last")
                    raise interrupted(signum, state["step"], self.run_dir)
            if validated_at != state["step"]:
                self.validate()
        finally:
            distributed.teardown(self.dist)
        return dict(state)
