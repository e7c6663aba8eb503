"""PNG overlays of predictions and ground truth on axial slices, for a quick visual check.

Each PNG shows one slice ``z`` of the image in grayscale, the prediction as a translucent filled
colour per class and the ground truth as a 1-pixel contour per class in the same colour. The slice
``image[:, :, z]`` of shape ``(X, Y)`` is shown transposed, so PNG rows run along ``Y`` and
columns along ``X`` (the PNG is ``X`` pixels wide and ``Y`` pixels high).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image
from scipy import ndimage

from medcl.evaluation.metrics import BACKGROUND_VALUE
from medcl.files import atomic_path

log = logging.getLogger(__name__)

#: RGB colours of the foreground classes, in ``class_values`` order, cycled if there are more.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (0, 130, 200),    # blue
    (255, 225, 25),   # yellow
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (245, 130, 48),   # orange
    (240, 50, 230),   # magenta
)
#: opacity of the filled prediction colour (0 = invisible, 1 = opaque).
PRED_ALPHA = 0.4
#: intensity percentiles mapped to black and white.
WINDOW_PERCENTILES = (1.0, 99.0)
_MAX_GRAY = 255.0


def class_colours(class_values: Mapping[str, int]) -> dict[int, tuple[int, int, int]]:
    """Label value -> RGB colour for each foreground class (value 0, the background, is skipped)."""
    values = [int(v) for v in class_values.values() if int(v) != BACKGROUND_VALUE]
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}


def window(image: np.ndarray) -> np.ndarray:
    """Scale ``image`` to ``[0, 1]`` between its 1st and 99th percentiles (clipped)."""
    lo, hi = np.percentile(image, WINDOW_PERCENTILES)
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.float64)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def _foreground_per_slice(labels: np.ndarray, values: list[int]) -> np.ndarray:
    return np.isin(labels, values).sum(axis=(0, 1))


def pick_slices(num_slices: int, depth: int, gt: np.ndarray | None, pred: np.ndarray | None,
                values: list[int]) -> list[int]:
    """Indices along ``Z`` to show, ascending.

    The ``num_slices`` slices with the most ground-truth foreground; if there is none, those with
    the most predicted foreground; if there is none either, evenly spaced slices.
    """
    count = min(num_slices, depth)
    for labels in (gt, pred):
        if labels is None:
            continue
        per_slice = _foreground_per_slice(labels, values)
        if per_slice.any():
            order = np.argsort(-per_slice, kind="stable")
            return sorted(int(z) for z in order[:count])
    # centres of ``count`` equal parts of the stack
    return sorted({int((i + 0.5) * depth / count) for i in range(count)})


def render_slice(gray: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None,
                 colours: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """Compose one slice as RGB.

    Args:
        gray: windowed intensities in ``[0, 1]``, shape ``(X, Y)``.
        pred: predicted label values ``(X, Y)`` or ``None``.
        gt: ground-truth label values ``(X, Y)`` or ``None``.
        colours: label value -> RGB colour.

    Returns:
        ``uint8`` array ``(Y, X, 3)`` (transposed for display).
    """
    rgb = np.repeat(gray[..., None] * _MAX_GRAY, 3, axis=-1)
    for value, colour in colours.items():
        colour = np.asarray(colour, dtype=np.float64)
        if pred is not None:
            mask = pred == value
            rgb[mask] = (1.0 - PRED_ALPHA) * rgb[mask] + PRED_ALPHA * colour
        if gt is not None:
            mask = gt == value
            rgb[mask & ~ndimage.binary_erosion(mask)] = colour
    return np.ascontiguousarray(np.rint(rgb).astype(np.uint8).transpose(1, 0, 2))


def save_overlays(image: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None,
                  out_dir: str | os.PathLike, case_id: str, class_values: Mapping[str, int],
                  num_slices: int = 3) -> list[Path]:
    """Write overlay PNGs of a few slices of one case.

    Args:
        image: intensities ``(X, Y, Z)``, any float scale (windowed to its 1-99 percentiles).
        pred: predicted label volume ``(X, Y, Z)`` with on-disk values, or ``None``.
        gt: ground-truth label volume ``(X, Y, Z)`` with on-disk values, or ``None``.
        out_dir: folder for the PNGs (created if missing).
        case_id: used in the file names ``{case_id}_z{index:03d}.png``.
        class_values: class name -> label value; each foreground class gets a palette colour.
        num_slices: number of slices to write (fewer if the volume has fewer slices).

    Returns:
        The written PNG paths, in slice order. Each PNG is ``X`` pixels wide, ``Y`` high.

    Raises:
        ValueError: ``image`` is not 3D, a label volume's shape differs, or ``num_slices < 1``.
    """
    if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
        raise ValueError(f"num_slices must be a positive integer, got {num_slices!r}")
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (X, Y, Z) array, got shape {image.shape}")
    for name, labels in (("pred", pred), ("gt", gt)):
        if labels is not None and np.shape(labels) != image.shape:
            raise ValueError(f"{name} shape {np.shape(labels)} differs from image {image.shape}")
    colours = class_colours(class_values)
    slices = pick_slices(num_slices, image.shape[2], gt, pred, list(colours))
    gray = window(image)
    out_dir = Path(out_dir)
    written = []
    for z in slices:
        rgb = render_slice(gray[:, :, z], None if pred is None else pred[:, :, z],
                           None if gt is None else gt[:, :, z], colours)
        path = out_dir / f"{case_id}_z{z:03d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        written.append(path)
    log.info("case %s: wrote %d overlay PNGs to %s", case_id, len(written), out_dir)
    return written
