"""Preprocessed slices on disk, memory-mapped: a training set larger than the memory.

With ``--slice-cache disk`` each training case's slices are written once to
``RUN/slices/{case}.{image,labels}.npy`` and read back memory-mapped (copy-on-write), so the
operating system keeps in memory only the slices the sampler touches, and can drop them again.
A 512 x 512 x 150 CT at float32 is 157 MB of slices; thirty of them need not fit in memory.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from medcl.data.slices import PreparedCase
from medcl.files import atomic_path

log = logging.getLogger(__name__)

SLICE_CACHES = ("memory", "disk")
#: the sub-folder of a run folder that holds the cache (medcl's own, removed after training)
CACHE_DIR = "slices"


PARTS = ("image", "labels")


def cache_file(folder: Path, case_id: str, part: str) -> Path:
    return folder / f"{case_id}.{part}.npy"


def _spill(tensor: torch.Tensor, path: Path) -> torch.Tensor:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.save(fh, tensor.numpy())
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def spill_to_disk(case: PreparedCase, folder: Path) -> PreparedCase:
    """``case`` with its slices (and labels) written under ``folder`` and memory-mapped."""
    image = _spill(case.image, cache_file(folder, case.case_id, "image"))
    labels = None if case.labels is None else _spill(
        case.labels, cache_file(folder, case.case_id, "labels"))
    return dataclasses.replace(case, image=image, labels=labels)


def remove_cache(folder: Path, case_ids: Iterable[str]) -> None:
    """Remove the cache files of ``case_ids`` that :func:`spill_to_disk` wrote in ``folder``,
    then the folder if that leaves it empty; nothing else is touched."""
    if not folder.is_dir():
        return
    for case_id in case_ids:
        for part in PARTS:
            cache_file(folder, case_id, part).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:  # something else lives there: leave it, say so
        log.warning("%s: not empty after removing the slice cache; left in place", folder)
