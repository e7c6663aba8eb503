"""Post-processing of predicted label maps: connected components, as nnU-Net chooses them.

A scribble-trained network often predicts foreground far from the anatomy, where no
background scribble taught it otherwise (air, arms, the far body wall). Three operations remove
it, in this order:

* **centre field**: keep foreground only inside the centred in-plane box covering a share of
  the field of view (an acquisition is centred on its target: the authors' code centre-crops
  every MSCMR slice to 212 px at 1.367 mm before predicting, background outside);
* **largest foreground**: keep the largest 3D connected component of the union of all
  foreground classes (the heart as a whole); every other foreground voxel becomes background;
* **largest per class**: keep the largest 3D connected component of one class.

Which of them a run uses is chosen on its validation cases, together with the checkpoint
(:mod:`medcl.training.selection`), and stored in ``RUN/postprocessing.json``; a
dataset whose structures are not one piece (two kidneys, scattered scar) keeps what validation
says helps, nothing more. Connectivity is 6-neighbour (faces) in 3D.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from medcl.errors import ConfigError, DataError
from medcl.files import atomic_write_text

#: the run folder's file naming the chosen post-processing
POSTPROCESSING_FILE = "postprocessing.json"
#: auto: chosen on validation after training and applied by predict; none: never
POSTPROCESSING_MODES = ("auto", "none")
#: the shares of the in-plane field of view (each axis, centred) that validation chooses among
CENTRE_FRACTIONS = (0.8, 0.65, 0.5, 0.4, 0.3)
_FACES = ndimage.generate_binary_structure(3, 1)


def largest_component_mask(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``mask (X, Y, Z)`` (bool); all False if empty.

    Components are labelled inside the mask's bounding box only (a compact prediction labels
    a small part of the volume: this runs at every validation, :mod:`medcl.training.selection`).
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    boxes = ndimage.find_objects(mask.view(np.uint8))
    if not boxes:
        return out
    box = boxes[0]
    comp, count = ndimage.label(mask[box], structure=_FACES)
    if count <= 1:
        out[box] = mask[box]
        return out
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    out[box] = comp == sizes.argmax()
    return out


def keep_largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep, for each foreground class, only its largest 3D connected component.

    Args:
        labels: class indices ``(X, Y, Z)``; 0 is the background.
        num_classes: number of classes including the background.

    Returns:
        A copy where voxels of the smaller components become background (0).
    """
    return keep_largest_of(labels, range(1, num_classes))


def keep_largest_of(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """A copy of class indices ``(X, Y, Z)`` where each of ``classes`` keeps only its largest
    connected component (the rest becomes background, 0)."""
    out = labels.copy()
    for k in classes:
        mask = labels == k
        out[mask & ~largest_component_mask(mask)] = 0
    return out


def centre_box(size: int, fraction: float) -> slice:
    """The centred index range covering at least ``fraction`` of ``size`` voxels."""
    start = int(size * (1.0 - fraction) / 2 + 1e-9)  # 1 - 0.8 is 0.1999...: not one voxel less
    return slice(start, size - start)


def keep_centre(labels: np.ndarray, fraction: float) -> np.ndarray:
    """A copy of class indices ``(X, Y, Z)`` where the foreground outside the centred in-plane
    box covering ``fraction`` of X and of Y becomes background (0); every slice alike."""
    out = np.zeros_like(labels)
    box = (centre_box(labels.shape[0], fraction), centre_box(labels.shape[1], fraction))
    out[box] = labels[box]
    return out


def keep_largest_foreground(labels: np.ndarray) -> np.ndarray:
    """A copy of class indices ``(X, Y, Z)`` where the foreground outside the largest connected
    component of the foreground union becomes background (0)."""
    foreground = labels > 0
    out = labels.copy()
    out[foreground & ~largest_component_mask(foreground)] = 0
    return out


@dataclass(frozen=True)
class Postprocessing:
    """What is applied to a predicted label map: the centre field, the largest foreground, then
    the largest component of each listed class.

    Args:
        largest_foreground: keep the largest component of the foreground union.
        largest_per_class: foreground class indices whose largest component alone is kept.
        centre_fraction: share of each in-plane axis (centred) where foreground is kept; 1: all.
    """

    largest_foreground: bool = False
    largest_per_class: tuple[int, ...] = ()
    centre_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.centre_fraction <= 1.0:
            raise ValueError(f"centre_fraction must be in (0, 1], got {self.centre_fraction}")
        if any(k < 1 for k in self.largest_per_class):
            raise ValueError(f"largest_per_class holds foreground classes (>= 1), got "
                             f"{self.largest_per_class}")

    @property
    def is_identity(self) -> bool:
        return (not self.largest_foreground and not self.largest_per_class
                and self.centre_fraction == 1.0)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Class indices ``(X, Y, Z)`` -> the post-processed class indices (a copy)."""
        out = keep_centre(labels, self.centre_fraction) if self.centre_fraction < 1.0 else labels
        out = keep_largest_foreground(out) if self.largest_foreground else out.copy()
        if self.largest_per_class:
            out = keep_largest_of(out, self.largest_per_class)
        return out

    def describe(self, class_names: Sequence[str]) -> str:
        parts = ([f"foreground in the centre {self.centre_fraction:g} of the field"]
                 if self.centre_fraction < 1.0 else []) + (
            ["largest foreground component"] if self.largest_foreground else []) + [
            f"largest component of {class_names[k]}" for k in self.largest_per_class]
        return ", ".join(parts) or "none"

    def to_dict(self, class_names: Sequence[str]) -> dict:
        return {"centre_fraction": self.centre_fraction,
                "largest_foreground": self.largest_foreground,
                "largest_per_class": [class_names[k] for k in self.largest_per_class]}

    @classmethod
    def from_dict(cls, data: dict, class_names: Sequence[str], *, source: str) -> Postprocessing:
        """Read :meth:`to_dict`'s form; ``source`` names the file in errors."""
        keys = ("centre_fraction", "largest_foreground", "largest_per_class", "validation", "step")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise DataError(f"{source}: unknown keys {unknown}; valid: {', '.join(keys)}")
        fraction = data.get("centre_fraction", 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                0.0 < fraction <= 1.0):
            raise DataError(f"{source}: centre_fraction must be a number in (0, 1], got "
                            f"{fraction!r}")
        names = data.get("largest_per_class", [])
        bad = [n for n in names if n not in class_names[1:]]
        if bad or not isinstance(data.get("largest_foreground", False), bool):
            raise DataError(f"{source}: largest_per_class names {bad or names} must be foreground "
                            f"classes ({', '.join(class_names[1:])}) and largest_foreground a "
                            f"boolean")
        return cls(data.get("largest_foreground", False),
                   tuple(class_names.index(n) for n in names), float(fraction))


def check_postprocessing_mode(mode: str) -> None:
    """Raise :class:`~medcl.errors.ConfigError` unless ``mode`` is one of
    :data:`POSTPROCESSING_MODES`."""
    if mode not in POSTPROCESSING_MODES:
        raise ConfigError(f"postprocessing must be one of {', '.join(POSTPROCESSING_MODES)}, "
                          f"got {mode!r}")


def read_postprocessing(run_dir: str | os.PathLike, class_names: Sequence[str]
                        ) -> Postprocessing:
    """The post-processing stored in ``run_dir`` (none if the run has no such file)."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        return Postprocessing()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return Postprocessing.from_dict(data, class_names, source=str(path))


def write_postprocessing(run_dir: str | os.PathLike, choice: Postprocessing,
                         class_names: Sequence[str], validation: dict, *,
                         step: int | None = None) -> Path:
    """Store ``choice`` (and the validation scores that chose it; the step of the checkpoint
    whose predictions they scored, where known) in ``run_dir``, atomically."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    atomic_write_text(path, json.dumps({**choice.to_dict(class_names), "validation": validation,
                                        **({} if step is None else {"step": step})},
                                       indent=1) + "\n")
    return path
