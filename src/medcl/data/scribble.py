"""Scribble simulation: dense label volume -> sparse scribble volume, as annotators draw them.

:func:`scribble_volume` draws, in each chosen slice, for each chosen class and connected
structure, thin strokes well inside the structure, and wide background strokes around the
foreground. The stroke shape follows the structure's shape:

* **compact** structures (a blood pool: area / (2 R)^2 <= ``thin_ratio``, with R the largest
  distance from a point inside to the boundary) get, when R >= ``outline_min_depth_mm``, an
  outline ``outline_depth_mm`` inside their boundary, and ``blob_lines`` straight strokes
  through their deepest point at evenly spread random angles, each covering ``extent`` of its
  contour or chord;
* **thin** structures (a myocardial ring, a vessel, an elongated lesion) get one stroke along
  their medial line (the ridge of the distance to the boundary), or beside it at
  ``medial_depth_share`` of its depth, a contiguous piece covering ``extent`` of that line, so
  a ring gets an arc that closes when ``extent`` is 1;
* the **background** gets ``background_strokes`` strokes that follow the outline of the
  foreground union at random distances in ``background_distance_mm``, each a contiguous piece
  covering ``background_extent`` of that contour (slices without foreground: lines through
  the background's deepest point).

Strokes are widened to their width and clipped to their structure, so every stroke voxel
carries the dense label's class. Defaults are calibrated on the real MyoPS 2020 scribbles
(``benchmarks/scribble_calibration.py``, ``docs/scribbles.md``). The result is deterministic
for a given ``seed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from medcl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
HALF_NEIGHBOURHOOD = ((0, 1), (1, -1), (1, 0), (1, 1))  # each 8-neighbour pair once
RIDGE_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
LINE_STEP_PX = 0.5           # sampling step along straight strokes
DEEPEST_SHARE = 0.9          # a blob's centre is drawn among points this deep (share of R)
RIDGE_DEPTH_SHARE = 0.7      # ridge pixels are at least this deep (share of the local depth)
CONTOUR_HALF_WIDTH_PX = 0.75  # |distance - level| band: a 1-2 px contour (widened later)
OUTLINE_HALF_WIDTH_PX = 0.5   # the same for outlines: a 1 px contour


@dataclass(frozen=True)
class ScribbleOptions:
    """How scribbles are drawn (lengths in mm, shares in ``[0, 1]``).

    Attributes:
        slice_fraction: share of the labelled slices that get scribbles (at least one slice).
        stroke_width_mm: width of foreground strokes (narrower than a voxel: 1 voxel wide).
        extent: share of a structure's medial line (thin) or chord (compact) one stroke covers.
        classes: class indices that get strokes; ``None``: every foreground class.
        as_background: class indices treated as background before drawing (MyoPS protocol:
            the RV lies under background strokes and gets none of its own).
        margin_mm: strokes of compact structures keep this far from the structure boundary.
        outline_depth_mm: compact structures also get an outline this deep inside their
            boundary (at most half their depth), covering ``extent`` of it; 0: none.
        outline_min_depth_mm: only compact structures at least this deep (R) get an outline
            (a blood pool does; a small lesion gets its lines only).
        blob_lines: straight strokes through a compact structure.
        thin_ratio: area / (2 R)^2 above which a structure is thin (a disk: pi/4, a ring of
            radius r and thickness t: 2 pi r / t).
        medial_depth_share: strokes of thin structures run where the distance to the boundary
            is this share of the medial line's (1: on the medial line itself).
        min_component_mm2: extra connected pieces of a class smaller than this get no stroke
            (the largest piece always gets one).
        background: draw background strokes.
        background_strokes: background strokes per slice.
        background_width_mm: width of background strokes.
        background_distance_mm: range of distances from the foreground at which background
            strokes run.
        background_extent: share of the contour around the foreground one stroke covers.
    """

    slice_fraction: float = 1.0
    stroke_width_mm: float = 0.5
    extent: float = 0.9
    classes: tuple[int, ...] | None = None
    as_background: tuple[int, ...] = ()
    margin_mm: float = 1.0
    outline_depth_mm: float = 2.0
    outline_min_depth_mm: float = 8.0
    blob_lines: int = 2
    thin_ratio: float = 3.0
    medial_depth_share: float = 0.7
    min_component_mm2: float = 10.0
    background: bool = True
    background_strokes: int = 4
    background_width_mm: float = 2.0
    background_distance_mm: tuple[float, float] = (0.5, 9.0)
    background_extent: float = 0.85

    def __post_init__(self) -> None:
        for name in ("slice_fraction", "extent", "medial_depth_share", "background_extent"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}")
        for name in ("stroke_width_mm", "background_width_mm", "thin_ratio"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("margin_mm", "outline_depth_mm", "outline_min_depth_mm", "min_component_mm2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.blob_lines < 1 or self.background_strokes < 0:
            raise ConfigError(f"blob_lines must be >= 1 and background_strokes >= 0, got "
                              f"{self.blob_lines} and {self.background_strokes}")
        low, high = self.background_distance_mm
        if not 0 <= low <= high:
            raise ConfigError(f"background_distance_mm must be (low, high) with 0 <= low <= high, "
                              f"got {self.background_distance_mm}")


def _inner_distance(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Distance (mm) from each pixel of ``mask`` to the nearest pixel outside it (the image
    border counts as outside)."""
    padded = np.pad(mask, 1)
    return ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1]


def _widen(centre: np.ndarray, width_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """Pixels within ``width_mm / 2`` of a stroke's centre line (at least the line itself)."""
    if not centre.any() or width_mm / 2 < min(spacing):
        return centre
    return ndimage.distance_transform_edt(~centre, sampling=spacing) <= width_mm / 2


def breadth_first_piece(path: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``target`` pixels of a breadth-first walk (8-connected) through the 2D mask
    ``path`` from a random pixel of it: a contiguous piece of a line or contour (all of
    ``path`` when it has at most ``target`` pixels)."""
    coords = np.argwhere(path)
    if len(coords) <= target:
        return path
    index = np.full(path.shape, -1, dtype=np.int64)
    index[path] = np.arange(len(coords))
    padded = np.pad(index, 1, constant_values=-1)
    rows, cols = [], []
    for di, dj in HALF_NEIGHBOURHOOD:
        nb = padded[1 + di:1 + di + path.shape[0], 1 + dj:1 + dj + path.shape[1]][path]
        keep = nb >= 0
        rows.append(np.flatnonzero(keep))
        cols.append(nb[keep])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(coords),) * 2)
    order = csgraph.breadth_first_order(graph.tocsr(), int(rng.integers(len(coords))),
                                        directed=False, return_predecessors=False)
    out = np.zeros_like(path)
    picked = coords[order[:target]]
    out[picked[:, 0], picked[:, 1]] = True
    return out


def _walk(path: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A contiguous piece covering ``share`` of the largest connected piece of ``path``
    (:func:`breadth_first_piece`)."""
    pieces, count = ndimage.label(path, structure=EIGHT_NEIGHBOURS)
    if count == 0:
        return path
    sizes = np.bincount(pieces.ravel())[1:]
    largest = int(np.argmax(sizes))
    return breadth_first_piece(pieces == largest + 1, max(1, math.ceil(share * sizes[largest])),
                               rng)


def _ridge(dist: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Medial line of a region: pixels at least as deep as both neighbours along some direction
    and deeper than one of them, and near the deepest point of their neighbourhood (which drops
    the spurs that pixel-level noise of the distance makes towards the boundary)."""
    padded = np.pad(dist, 1)
    h, w = dist.shape
    ridge = np.zeros(dist.shape, dtype=bool)
    for di, dj in RIDGE_DIRECTIONS:
        ahead = padded[1 + di:1 + di + h, 1 + dj:1 + dj + w]
        behind = padded[1 - di:1 - di + h, 1 - dj:1 - dj + w]
        ridge |= (dist >= ahead) & (dist >= behind) & ((dist > ahead) | (dist > behind))
    return ridge & (dist > 0) & (dist >= RIDGE_DEPTH_SHARE * _local_depth(dist, spacing))


def _local_depth(dist: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Largest distance to the boundary within the region's depth of each pixel: the depth of
    the nearby medial line."""
    reach = 2 * math.ceil(float(dist.max()) / min(spacing)) + 1
    return ndimage.maximum_filter(dist, size=reach)


def _medial_path(mask: np.ndarray, dist: np.ndarray, spacing: tuple[float, float], share: float,
                 rng: np.random.Generator) -> np.ndarray:
    """The medial line (``share`` 1), or the line at ``share`` of the local medial depth on one
    side of it: the side that faces one piece of the outside (a ring's hole or its exterior),
    picked at random."""
    if share >= 1:
        return _ridge(dist, spacing)
    level = share * _local_depth(dist, spacing)
    line = (np.abs(dist - level) <= OUTLINE_HALF_WIDTH_PX * max(spacing)) & mask
    if not line.any():
        return _ridge(dist, spacing)
    padded = np.pad(mask, 1)
    outside, _ = ndimage.label(~padded, structure=EIGHT_NEIGHBOURS)
    nearest = ndimage.distance_transform_edt(padded, sampling=spacing, return_distances=False,
                                             return_indices=True)
    side = outside[nearest[0], nearest[1]][1:-1, 1:-1]
    candidates = np.argwhere(line)
    pick = candidates[rng.integers(len(candidates))]
    return line & (side == side[tuple(pick)])


def _chord(dist: np.ndarray, centre: np.ndarray, angle: float, floor: float, extent: float,
           spacing: tuple[float, float]) -> np.ndarray:
    """Pixels of the straight stroke through ``centre`` at ``angle`` (mm frame): the run of the
    line where ``dist >= floor``, shortened to its central ``extent``."""
    step = np.array([math.cos(angle), math.sin(angle)]) / np.asarray(spacing)
    step *= LINE_STEP_PX / np.abs(step).max()
    out = np.zeros(dist.shape, dtype=bool)
    halves = []
    for sign in (1, -1):
        points = []
        point = centre.astype(float)
        while True:
            pixel = np.rint(point).astype(int)
            outside = (pixel < 0).any() or (pixel >= dist.shape).any()
            if outside or dist[tuple(pixel)] <= 0 or dist[tuple(pixel)] < floor:
                break
            points.append(pixel)
            point = point + sign * step
        halves.append(points)
    for points in halves:
        for pixel in points[:max(1, math.ceil(extent * len(points)))]:
            out[tuple(pixel)] = True
    return out


def _structure_stroke(mask: np.ndarray, spacing: tuple[float, float], opts: ScribbleOptions,
                      rng: np.random.Generator) -> np.ndarray:
    """Centre line of the strokes of one connected structure (thin: ridge arc; compact: lines)."""
    dist = _inner_distance(mask, spacing)
    depth = float(dist.max())
    area = float(mask.sum()) * spacing[0] * spacing[1]
    if area / (2 * depth) ** 2 > opts.thin_ratio:
        path = _medial_path(mask, dist, spacing, opts.medial_depth_share, rng)
        return _walk(path, opts.extent, rng)
    out = _lines(dist, spacing, opts, rng)
    if opts.outline_depth_mm > 0 and depth >= opts.outline_min_depth_mm:
        level = min(opts.outline_depth_mm, depth / 2)
        outline = np.abs(dist - level) <= OUTLINE_HALF_WIDTH_PX * max(spacing)
        out |= _walk(outline, opts.extent, rng)
    return out


def _lines(dist: np.ndarray, spacing: tuple[float, float], opts: ScribbleOptions,
           rng: np.random.Generator) -> np.ndarray:
    """``blob_lines`` straight strokes through a deep point, at evenly spread random angles."""
    deep = np.argwhere(dist >= DEEPEST_SHARE * float(dist.max()))
    centre = deep[rng.integers(len(deep))]
    floor = min(opts.margin_mm, float(dist[tuple(centre)]))
    first = rng.uniform(0, math.pi)
    out = np.zeros(dist.shape, dtype=bool)
    for k in range(opts.blob_lines):
        out |= _chord(dist, centre, first + k * math.pi / opts.blob_lines, floor, opts.extent,
                      spacing)
    return out


def _class_strokes(mask: np.ndarray, spacing: tuple[float, float], opts: ScribbleOptions,
                   rng: np.random.Generator) -> np.ndarray:
    """Strokes of one class in one slice: one set per connected piece (tiny extra pieces none)."""
    pieces, count = ndimage.label(mask, structure=EIGHT_NEIGHBOURS)
    sizes = np.bincount(pieces.ravel())[1:] * spacing[0] * spacing[1]
    boxes = ndimage.find_objects(pieces)
    out = np.zeros(mask.shape, dtype=bool)
    for rank, piece in enumerate(np.argsort(-sizes, kind="stable")):
        if rank and sizes[piece] < opts.min_component_mm2:
            break
        box = boxes[piece]
        region = pieces[box] == piece + 1
        centre = _structure_stroke(region, spacing, opts, rng)
        out[box] |= _widen(centre, opts.stroke_width_mm, spacing) & region
    return out


def _background_strokes(background: np.ndarray, foreground: np.ndarray,
                        spacing: tuple[float, float], opts: ScribbleOptions,
                        rng: np.random.Generator) -> np.ndarray:
    """Wide strokes along the outline of the foreground, at random distances from it."""
    if not foreground.any():
        centre = _structure_stroke(background, spacing, opts, rng)
        return _widen(centre, opts.background_width_mm, spacing) & background
    outside = ndimage.distance_transform_edt(~foreground, sampling=spacing)
    band = CONTOUR_HALF_WIDTH_PX * max(spacing)
    out = np.zeros(background.shape, dtype=bool)
    for _ in range(opts.background_strokes):
        level = rng.uniform(*opts.background_distance_mm) + opts.background_width_mm / 2
        contour = (np.abs(outside - level) <= band) & background
        out |= _widen(_walk(contour, opts.background_extent, rng), opts.background_width_mm,
                      spacing)
    return out & background


def scribble_slice(labels: np.ndarray, spacing: tuple[float, float], *, num_classes: int,
                   ignore_index: int, options: ScribbleOptions,
                   rng: np.random.Generator) -> np.ndarray:
    """Scribbles of one 2D slice of class indices ``(H, W)``: class indices on strokes,
    ``ignore_index`` elsewhere. ``spacing`` is the pixel size (mm) along ``(H, W)``."""
    out = np.full(labels.shape, ignore_index, dtype=np.int64)
    classes = range(1, num_classes) if options.classes is None else options.classes
    for cls in sorted(set(classes) - set(options.as_background)):
        mask = labels == cls
        if mask.any():
            out[_class_strokes(mask, spacing, options, rng)] = cls
    background = labels == 0
    if options.background and background.any():
        foreground = (labels != 0) & (labels != ignore_index)
        out[_background_strokes(background, foreground, spacing, options, rng)
            & (out == ignore_index)] = 0
    return out


def _check(labels: np.ndarray, spacing, num_classes: int, ignore_index: int,
           options: ScribbleOptions) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if 0 <= ignore_index < num_classes:
        raise ConfigError(f"ignore_index {ignore_index} collides with a class index")
    bad_classes = [c for c in (options.classes or ()) + options.as_background
                   if not 0 < c < num_classes]
    if bad_classes:
        raise ConfigError(f"classes {bad_classes} are not foreground indices 1..{num_classes - 1}")
    if labels.ndim != 3:
        raise DataError(f"expected a 3D label volume, got shape {labels.shape}")
    if len(spacing) < 3 or min(spacing[:3]) <= 0:
        raise DataError(f"spacing must give 3 positive voxel sizes, got {spacing}")
    bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(num_classes), ignore_index])
    if bad.size:
        raise DataError(f"label volume holds values {bad.tolist()} outside 0..{num_classes - 1} "
                        f"and ignore_index {ignore_index}")


def scribble_volume(labels: np.ndarray, spacing, *, num_classes: int, ignore_index: int,
                    options: ScribbleOptions | None = None, seed: int = 0,
                    slice_axis: int = 2) -> np.ndarray:
    """Simulate scribble annotation of a dense label volume.

    Args:
        labels: dense class indices ``(X, Y, Z)`` in ``0..num_classes-1`` (0 = background);
            ``ignore_index`` voxels are allowed and stay unlabelled.
        spacing: voxel size in mm along ``(X, Y, Z)``.
        num_classes: number of classes including the background.
        ignore_index: value of unlabelled voxels in the output.
        options: how strokes are drawn (default :class:`ScribbleOptions`).
        seed: the result is a function of the inputs and the seed.
        slice_axis: axis along which slices are annotated.

    Returns:
        int64 array of ``labels``' shape: class indices on strokes, ``ignore_index`` elsewhere.

    Raises:
        ConfigError: invalid ``num_classes``, ``ignore_index`` or class selection.
        DataError: ``labels`` is not 3D, holds other values, or ``spacing`` is not positive.
    """
    options = options or ScribbleOptions()
    labels = np.asarray(labels)
    _check(labels, spacing, num_classes, ignore_index, options)
    rng = np.random.default_rng(seed)
    if options.as_background:
        labels = np.where(np.isin(labels, options.as_background), 0, labels)
    moved = np.moveaxis(labels, slice_axis, -1)
    plane = tuple(float(s) for i, s in enumerate(spacing[:3]) if i != slice_axis % 3)
    labelled = [z for z in range(moved.shape[-1]) if (moved[..., z] != ignore_index).any()]
    keep = max(1, round(options.slice_fraction * len(labelled))) if labelled else 0
    chosen = sorted(rng.choice(labelled, size=keep, replace=False)) if keep else []
    out = np.full(moved.shape, ignore_index, dtype=np.int64)
    for z in chosen:
        out[..., z] = scribble_slice(moved[..., z], plane, num_classes=num_classes,
                                     ignore_index=ignore_index, options=options, rng=rng)
    log.debug("scribbled %d of %d labelled slices", len(chosen), len(labelled))
    return np.moveaxis(out, -1, slice_axis)
