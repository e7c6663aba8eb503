"""``medcl train``: a run from a configuration to a run folder, fresh or resumed.

:func:`train` composes :func:`~medcl.training.data.load_training_data` and
:class:`~medcl.training.trainer.Trainer`; the run folder's files are described in
:mod:`medcl.training.run_folder`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from medcl.errors import ConfigError, DataError
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.runtime.device import set_threads
from medcl.training.config import TrainConfig
from medcl.training.data import load_training_data
from medcl.training.run_folder import CONFIG_NAME
from medcl.training.trainer import Trainer

log = logging.getLogger(__name__)

#: options that may change when a run is resumed; all others must stay as saved.
RESUME_OVERRIDABLE = ("iterations", "max_minutes", "device", "num_threads", "val_interval",
                      "log_interval", "infer_batch_size", "precision", "channels_last", "compile")


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
