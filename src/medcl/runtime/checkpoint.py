"""Checkpoints: written atomically, loaded on the CPU first.

A checkpoint is a dict with ``model``, ``optimizer``, ``schedule``, ``rng``, ``step``,
``elapsed_seconds``, ``best`` (the best validation score so far), ``selection`` (the best
validated checkpoint under each selection rule, with its scores and post-processing),
``config`` (the full resolved :class:`~medcl.training.config.TrainConfig` as a dict),
``label_spec`` and ``model_kwargs`` (what :func:`~medcl.models.build_model` needs to rebuild the
network).
"""

from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from medcl.errors import DataError
from medcl.files import atomic_path, write_error

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAMES = ("best", "last")
#: bytes read to recognise torch.save's legacy format (before torch 1.6), which opens with a
#: pickled magic number (15 bytes)
LEGACY_HEADER_BYTES = 32
#: what :func:`describe_network` names of a network's builder arguments (``model_kwargs``)
NETWORK_KEYS = ("in_channels", "num_classes", "widths")


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


def read_torch_file(source: Path | BinaryIO, name: str):
    """``torch.load`` of a file or a seekable binary stream (a zip member read into memory) onto
    the CPU, tensors and plain data only (``weights_only=True``); ``name`` names it in errors.

    Raises:
        DataError: it is not a PyTorch checkpoint, a damaged one, or one whose loading would
            run code.
    """
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise _unloadable(source, name, exc) from exc


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint onto the CPU.

    Raises:
        DataError: the file is missing, not a PyTorch checkpoint, a damaged one, one whose
            loading would run code, or not a medcl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    state = read_torch_file(path, str(path))
    missing = ({"model", "config", "label_spec", "model_kwargs"}
               - set(state if isinstance(state, dict) else {}))
    if missing:
        raise DataError(f"{path}: not a medcl checkpoint (missing {sorted(missing)})")
    return state


def _rewound(source: Path | BinaryIO) -> Path | BinaryIO:
    if not isinstance(source, Path):
        source.seek(0)
    return source


def _unloadable(source: Path | BinaryIO, name: str, exc: Exception) -> DataError:
    """Why ``torch.load(weights_only=True)`` failed on ``source``: a checkpoint that names code
    to run, a file that is no PyTorch checkpoint at all, or a damaged one."""
    if zipfile.is_zipfile(_rewound(source)):
        code = _unsafe_globals(_rewound(source))
    elif _is_legacy_checkpoint(_rewound(source)):
        code = ["objects other than tensors and plain data"] if isinstance(
            exc, pickle.UnpicklingError) else []
    else:
        return DataError(f"{name}: not a PyTorch checkpoint (neither the zip archive torch.save "
                         "writes nor its legacy format)")
    if code:
        return DataError(f"{name}: refused: loading it would run code (it holds "
                         f"{', '.join(code)}; medcl loads checkpoints with weights_only=True)")
    reason = (str(exc).strip().splitlines() or [""])[0]
    return DataError(f"{name}: not a readable checkpoint ({type(exc).__name__}: {reason})")


def _unsafe_globals(source: Path | BinaryIO) -> list[str]:
    """The functions and classes a zip checkpoint names that weights-only loading refuses (read
    from its pickle without running it); none for a damaged archive."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(source))
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError):  # damaged: no code found
        return []


def _is_legacy_checkpoint(source: Path | BinaryIO) -> bool:
    """Whether ``source`` opens with the pickled magic number of torch.save's legacy format."""
    if isinstance(source, Path):
        with source.open("rb") as fh:
            head = fh.read(LEGACY_HEADER_BYTES)
    else:
        head = source.read(LEGACY_HEADER_BYTES)
    try:
        return any(arg == torch.serialization.MAGIC_NUMBER
                   for _, arg, _ in pickletools.genops(head))
    except ValueError:  # not a pickle
        return False


def describe_network(model_kwargs: dict) -> str:
    """``model 'unet' (in_channels 1, num_classes 4)``: the network ``model_kwargs`` build."""
    sizes = ", ".join(f"{k} {model_kwargs[k]}" for k in NETWORK_KEYS if k in model_kwargs)
    return f"model {model_kwargs.get('name')!r} ({sizes})"


def load_weights(module: nn.Module, weights: dict, *, source: str | os.PathLike, what: str,
                 saved_for: dict | None = None) -> None:
    """``module.load_state_dict(weights)`` once every tensor is known to fit, so that weights of
    another architecture, class count or input channel count fail in one line (torch lists
    every size mismatch).

    Args:
        source: the file the weights come from (named in the error).
        what: what ``module`` is, e.g. :func:`describe_network` of its builder arguments.
        saved_for: the builder arguments the file records, named in the error (pass them
            where they differ from those that built ``module``).

    Raises:
        DataError: naming ``source``, ``what``, and the first tensor that is missing,
            unexpected or of another shape (the two shapes).
    """
    expected = module.state_dict()
    weights = weights if isinstance(weights, dict) else {}
    misfits = [m for name, tensor in expected.items()
               if (m := _misfit(name, weights.get(name), tensor))]
    misfits += [f"the file has {name}, which the network has not" for name in weights
                if name not in expected]
    if misfits:
        more = f" (and {len(misfits) - 1} more)" if len(misfits) > 1 else ""
        saved = f"; the file was saved for {describe_network(saved_for)}" if saved_for else ""
        raise DataError(f"{source}: the weights do not fit {what}: {misfits[0]}{more}{saved}")
    module.load_state_dict(weights)


def _misfit(name: str, stored, tensor) -> str | None:
    """Why ``stored`` cannot be the tensor ``name`` (``None``: it fits; a module's extra state,
    not a tensor, is left to ``load_state_dict``)."""
    if not isinstance(tensor, torch.Tensor):
        return None
    shape = tuple(tensor.shape)
    if not isinstance(stored, torch.Tensor):
        return f"the file has no {name} {shape}"
    if tuple(stored.shape) != shape:
        return f"{name} is {tuple(stored.shape)} in the file, {shape} in the network"
    return None
