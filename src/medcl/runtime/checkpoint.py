"""Checkpoints: written atomically, loaded on the CPU first.

A checkpoint is a dict with ``model``, ``optimizer``, ``schedule``, ``rng``, ``step``,
``elapsed_seconds``, ``best`` (the best validation score so far), ``config`` (the full resolved
:class:`~medcl.config.TrainConfig` as a dict), ``label_spec`` and ``model_kwargs`` (what
:func:`~medcl.models.build_model` needs to rebuild the network).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import BinaryIO

import torch

from medcl.errors import DataError
from medcl.files import atomic_path, write_error

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAMES = ("best", "last")


def checkpoint_path(run_dir: str | os.PathLike, name: str) -> Path:
    if name not in CHECKPOINT_NAMES:
        raise ValueError(f"checkpoint name must be one of {CHECKPOINT_NAMES}, got {name!r}")
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}.pt"


def find_checkpoint(run: str | os.PathLike, name: str = "best") -> Path:
    """The checkpoint file of ``run``: the file itself if ``run`` is one, else
    ``run/checkpoints/{name}.pt`` (``best`` falls back to ``last`` when absent)."""
    run = Path(run)
    if run.is_file():
        return run
    path = checkpoint_path(run, name)
    if name == "best" and not path.is_file():
        path = checkpoint_path(run, "last")
    return path


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename.

    Raises:
        WriteError: the disk is full or the folder read-only (torch reports a full disk as a
            ``RuntimeError`` from its zip writer); ``path`` keeps its earlier content.
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:
            raise write_error(path, exc) from exc


def read_torch_file(source: str | os.PathLike | BinaryIO, name: str):
    """``torch.load`` of a file or an open binary stream onto the CPU, tensors and plain data
    only (``weights_only=True``); ``name`` names it in errors.

    Raises:
        DataError: it holds objects other than tensors and plain data, or is not readable.
    """
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{name}: refused: loading it would run code (it holds objects other "
                        "than tensors and plain data; medcl loads checkpoints with "
                        "weights_only=True)") from exc
    except Exception as exc:  # torch raises many types for corrupt files
        raise DataError(f"{name}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint onto the CPU.

    Raises:
        DataError: the file is missing or not a medcl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    state = read_torch_file(path, str(path))
    missing = {"model", "config", "label_spec", "model_kwargs"} - set(state if isinstance(state, dict) else {})
    if missing:
        raise DataError(f"{path}: not a medcl checkpoint (missing {sorted(missing)})")
    return state
