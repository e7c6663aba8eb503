"""How a slice is shown: radiological orientation from the affine, and a readable size.

A slice ``volume[:, :, z]`` has voxel axes ``(X, Y)``. :func:`display_layout` decides, from the
volume's voxel-to-world (RAS) affine, which voxel axis runs along the screen's columns and rows
and whether each is flipped, so that the picture follows the radiological convention:

* axial slices (slice normal closest to S-I): patient's right on the screen's left, anterior up;
* coronal slices (normal closest to A-P): patient's right on the left, superior up;
* sagittal slices (normal closest to R-L): anterior on the left, superior up.

Oblique slices (cardiac short axis) are shown by the nearest of these (``nibabel``'s
``io_orientation``). :func:`upsample` then scales the slice to at least ``MIN_LONG_SIDE`` pixels
on its long side, with square pixels in mm: nearest-neighbour for label maps, bilinear for
intensities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from nibabel.orientations import io_orientation
from PIL import Image

#: the long side of a displayed slice, in pixels, is at least this.
MIN_LONG_SIDE = 512
#: RAS world axis -> (screen-column world axis and sign, screen-row world axis and sign) for the
#: slice whose normal is that world axis. Sign -1: moving right (or down) on the screen goes
#: towards decreasing RAS coordinates (to the patient's left, posterior or inferior).
_RADIOLOGICAL = {
    2: ((0, -1), (1, -1)),  # axial: columns R -> L, rows A -> P
    1: ((0, -1), (2, -1)),  # coronal: columns R -> L, rows S -> I
    0: ((1, -1), (2, -1)),  # sagittal: columns A -> P, rows S -> I
}
#: letter of the patient direction at the positive / negative end of each RAS axis.
_DIRECTION_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))


@dataclass(frozen=True)
class DisplayLayout:
    """How to turn a slice ``(X, Y)`` into a screen image ``(rows, cols)``.

    Attributes:
        transpose: screen columns run along voxel axis ``X`` (the slice is transposed).
        flip_rows: reverse the rows after the transposition.
        flip_cols: reverse the columns after the transposition.
        edges: patient-direction letters at the ``(top, bottom, left, right)`` screen edges.
    """

    transpose: bool
    flip_rows: bool
    flip_cols: bool
    edges: tuple[str, str, str, str]

    def apply(self, plane: np.ndarray) -> np.ndarray:
        """Screen array ``(rows, cols, ...)`` of a slice ``(X, Y, ...)``."""
        out = np.swapaxes(plane, 0, 1) if self.transpose else plane
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def pixel_mm(self, spacing: tuple[float, float]) -> tuple[float, float]:
        """``(row height, column width)`` in mm of a slice with voxel ``spacing`` ``(X, Y)``."""
        return (spacing[0], spacing[1]) if not self.transpose else (spacing[1], spacing[0])


def _letter(world_axis: int, sign: int) -> str:
    return _DIRECTION_LETTERS[world_axis][0 if sign > 0 else 1]


def display_layout(affine: np.ndarray) -> DisplayLayout:
    """The radiological :class:`DisplayLayout` of axial slices ``[:, :, z]`` of a volume.

    Args:
        affine: ``(4, 4)`` voxel-to-world matrix in RAS (nibabel's convention).
    """
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))  # per voxel axis: world axis, sign
    world = [int(a) for a in ornt[:, 0]]
    signs = [int(s) for s in ornt[:, 1]]
    (col_world, col_sign), (row_world, row_sign) = _RADIOLOGICAL[world[2]]
    col_axis = world.index(col_world)  # voxel axis (0 or 1) shown along the columns
    row_axis = world.index(row_world)
    edges = (_letter(row_world, -row_sign), _letter(row_world, row_sign),
             _letter(col_world, -col_sign), _letter(col_world, col_sign))
    return DisplayLayout(transpose=col_axis == 0, flip_rows=signs[row_axis] != row_sign,
                         flip_cols=signs[col_axis] != col_sign, edges=edges)


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along ``(X, Y, Z)``: the lengths of the affine's first three columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return tuple(float(n) for n in norms)


def display_size(shape: tuple[int, int], pixel_mm: tuple[float, float]) -> tuple[int, int]:
    """``(rows, cols)`` in pixels of a slice ``shape`` shown with square pixels.

    The long side gets ``max(MIN_LONG_SIDE, the longer of shape)`` pixels; the short side keeps
    the physical aspect ratio.
    """
    height_mm, width_mm = shape[0] * pixel_mm[0], shape[1] * pixel_mm[1]
    long_side = max(MIN_LONG_SIDE, *shape)
    per_mm = long_side / max(height_mm, width_mm)
    return max(1, math.floor(height_mm * per_mm + 0.5)), max(1, math.floor(width_mm * per_mm + 0.5))


def upsample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map ``(rows, cols)`` to ``size`` (pixel centres)."""
    rows = ((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(np.int64)
    return labels[np.minimum(rows, labels.shape[0] - 1)][:, np.minimum(cols, labels.shape[1] - 1)]


def upsample_image(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of intensities ``(rows, cols)`` to ``size``, as float64."""
    resized = Image.fromarray(np.asarray(gray, dtype=np.float32)).resize(
        (size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float64)
