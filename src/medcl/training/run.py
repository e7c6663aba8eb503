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

from medcl.data.slice_cache import CACHE_DIR, remove_cache
from medcl.errors import ConfigError, DataError
from medcl.files import check_writable
from medcl.runtime import distributed
from medcl.runtime.checkpoint import CHECKPOINT_DIR, checkpoint_path, load_checkpoint
from medcl.runtime.device import set_threads
from medcl.training.config import TrainConfig
from medcl.training.data import load_training_data
from medcl.training.init_from import open_source
from medcl.training.interrupt import StopSignal
from medcl.training.run_folder import (
    CONFIG_NAME,
    PATH_KEYS,
    absolute_paths,
    check_run_files,
    check_same_dataset,
    clean_temporaries,
    record_run_files,
    removed_if_no_step,
    run_state,
    truncate_metrics,
    write_cases,
)
from medcl.training.selection import finish_selection
from medcl.training.trainer import Trainer

log = logging.getLogger(__name__)

#: options that may change when a run is resumed; all others must stay as saved. A new
#: ``data``/``labels`` path must hold the same dataset (label definition and case ids).
RESUME_OVERRIDABLE = ("iterations", "max_minutes", "device", "num_threads", "val_interval",
                      "log_interval", "infer_batch_size", "precision", "postprocessing",
                      "channels_last", "compile", "checkpoint_minutes", "data", "labels")


def resume_config(run_dir: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """The saved configuration of ``run_dir`` with the allowed ``overrides`` applied."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise DataError(f"{path}: nothing to resume (no run in {run_dir})")
    cfg = TrainConfig.from_file(path)
    overrides = absolute_paths(overrides or {})
    bad = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE
                 and v != getattr(cfg, k, None))
    if bad:
        raise ConfigError(f"{path}: cannot change {bad} when resuming; allowed: "
                          f"{', '.join(RESUME_OVERRIDABLE)}")
    return replace(cfg, **overrides)


def _prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Check the run folder before any data is loaded; the checkpoint to resume, if any.

    Raises:
        DataError: a fresh run in a folder that holds one or a file medcl did not write where a
            run file goes, or ``resume`` with no run there.
        WriteError: the folder cannot be written.
    """
    state = run_state(run_dir)
    if resume and state == "empty":
        raise DataError(f"{run_dir / CONFIG_NAME}: nothing to resume (no run in {run_dir})")
    if not resume and state != "empty":
        hint = ("; it has no checkpoint yet: --resume starts it from step 0 with its stored "
                "configuration" if state == "configured" else "")
        raise DataError(f"{run_dir}: already holds a run; pass --resume or choose another "
                        f"--out{hint}")
    if distributed.from_env().is_main:
        if not resume:
            check_run_files(run_dir)
        check_writable(run_dir / CHECKPOINT_DIR)
        clean_temporaries(run_dir)
    return checkpoint_path(run_dir, "last") if state == "checkpointed" else None


def train(cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          callback: Callable[[dict], None] | None = None) -> dict:
    """Train with ``cfg.method``'s objective; write ``run_dir/{config.json, cases.json,
    metrics.jsonl, selection.json, postprocessing.json, checkpoints/}``. Under ``torchrun``
    every process calls this (see :mod:`medcl.runtime.distributed`). With ``cfg.init_from``
    the network starts from those weights (:mod:`medcl.training.init_from`) unless a
    checkpoint is resumed.

    A run that fails before its first step takes back the files it wrote
    (:func:`~medcl.training.run_folder.removed_if_no_step`), so it can simply be run again.

    Args:
        cfg: the configuration (for ``resume``, see :func:`resume_config`); ``data`` and
            ``labels`` are stored as absolute paths.
        run_dir: output folder; must not hold a run unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt`` exactly where it stopped (from
            step 0 if the run has a configuration but no checkpoint yet).
        callback: receives ``{"event": "step" | "val", ...}`` records (the CLI's progress bar).

    Returns:
        ``{"step", "elapsed_seconds", "best", "best_step", "last_val"}``.

    Raises:
        Interrupted: on SIGTERM/SIGINT, after ``last.pt`` was saved (see
            :mod:`medcl.training.interrupt`).
    """
    run_dir = Path(run_dir)
    last_path = _prepare_run_dir(run_dir, resume)
    trainer: Trainer | None = None
    with removed_if_no_step(run_dir, lambda: trainer.state["step"] if trainer else 0):
        cfg = replace(cfg, **absolute_paths({k: getattr(cfg, k) for k in PATH_KEYS}))
        source = None
        if cfg.init_from and last_path is None:  # a checkpoint to resume holds the weights
            source = open_source(cfg.init_from, expected_sha256=cfg.init_from_sha256)
            cfg = replace(cfg, init_from=str(source.path), init_from_sha256=source.sha256)
        set_threads(cfg.num_threads)
        cache = run_dir / CACHE_DIR if cfg.slice_cache == "disk" else None
        data, cfg = load_training_data(cfg, cache_dir=cache)
        cases = {"train": [c.case_id for c in data.train], "val": [c.case_id for c in data.val]}
        ckpt = load_checkpoint(last_path) if last_path is not None else None
        if resume:
            check_same_dataset(run_dir, cases, data.spec, ckpt and ckpt["label_spec"])
        trainer = Trainer(cfg, data, run_dir, callback=callback)
        if ckpt is not None:
            trainer.restore(ckpt, source=last_path)
            log.info("resumed %s at step %d", last_path, trainer.state["step"])
        elif source is not None:
            trainer.start_from(source)
            log.info("starting from the weights of %s (step %d, sha256 %s)", source.path,
                     source.step, source.sha256)
        if ckpt is None and resume:
            log.info("%s has no checkpoint: starting from step 0 with its configuration", run_dir)
        if trainer.dist.is_main:
            record_run_files(run_dir)
            truncate_metrics(run_dir, trainer.state["step"])
            write_cases(run_dir, cases)
        try:
            with StopSignal() as stop:
                result = trainer.run(stop)
            if cfg.postprocessing == "auto" and data.val and trainer.dist.is_main:
                finish_selection(run_dir, trainer.selection, data.spec.class_names, data.val,
                                 device=cfg.device)
            return result
        finally:
            if cache is not None and trainer.dist.is_main:
                remove_cache(cache, cases["train"])
