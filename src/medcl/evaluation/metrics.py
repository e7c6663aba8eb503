"""Per-class segmentation metrics on label volumes: Dice, HD95 and ASSD.

All functions take numpy arrays in voxel order ``(X, Y, Z)`` and the voxel ``spacing`` in mm
along the same axes. Definitions:

* **Dice** ``= 2 |P & G| / (|P| + |G|)`` for the boolean prediction mask ``P`` and ground-truth
  mask ``G``.
* **Surface** of a mask: its voxels with at least one 6-connected (face) neighbour outside the
  mask, i.e. ``mask XOR binary_erosion(mask, cross)``. Voxels beyond the array border count as
  outside, so mask voxels on the border are surface voxels (as in ``medpy``).
* **Directed surface distances** ``P -> G``: for every surface voxel of ``P``, the Euclidean
  distance in mm (spacing-aware) to the nearest surface voxel of ``G`` (as in ``medpy``).
* **HD95**, in one of two conventions (``hd95_convention``), both with numpy's default linear
  interpolation of percentiles:

  - ``"medpy"`` (default): ``percentile_95(concat(P -> G, G -> P))``, the 95th percentile of the
    pooled distances, as ``medpy.metric.binary.hd95`` defines it;
  - ``"monai"``: ``max(percentile_95(P -> G), percentile_95(G -> P))``, the larger of the two
    directed 95th percentiles, as MONAI's ``compute_hausdorff_distance(percentile=95)`` and many
    papers define it. It is usually larger than the medpy value (one direction with a few far
    outliers weighs more), though not always: the percentiles interpolate differently.
* **ASSD** ``=`` the mean of the two directed mean distances,
  ``(mean(P -> G) + mean(G -> P)) / 2``, as ``medpy.metric.binary.assd`` defines it.

Dice and ASSD are the definitions of the field's benchmark code (medpy); for HD95 both common
conventions are offered so numbers can be compared with the pipeline or paper at hand.

Empty-mask rule, applied per class and case:

* both masks empty: Dice 1, HD95 0, ASSD 0 (the structure is correctly predicted absent);
* exactly one mask empty: Dice 0, and HD95 = ASSD = the diagonal length of the volume in mm,
  ``sqrt(sum_i (shape_i * spacing_i) ** 2)``. This worst-case penalty keeps such cases in the
  averages instead of silently dropping them (which would flatter the means). These cases are
  reported by :func:`empty_mask_flags` and logged as warnings by :func:`case_metrics`.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

METRIC_NAMES = ("dice", "hd95", "assd")
#: on-disk label value of the background (``LabelSpec`` requires 0); not a foreground class.
BACKGROUND_VALUE = 0
HD_PERCENTILE = 95.0
#: HD95 conventions: name -> how the two directed distance sets are reduced (module docstring).
HD95_MEDPY = "medpy"
HD95_MONAI = "monai"
HD95_CONVENTIONS = (HD95_MEDPY, HD95_MONAI)
#: connectivity of the structuring element that defines the surface (1 = face neighbours).
SURFACE_CONNECTIVITY = 1
PRED_EMPTY = "prediction empty"
GT_EMPTY = "ground truth empty"

HD95_DEFINITIONS = {
    HD95_MEDPY: "HD95 = 95th percentile of the pooled directed surface distances (medpy).",
    HD95_MONAI: "HD95 = max of the two directed 95th percentiles of the surface distances (MONAI).",
}
_SURFACE_DEFINITION = (
    "Dice = 2|P&G|/(|P|+|G|). Surface = mask voxels with a 6-connected neighbour outside the mask "
    "(array border counts as outside). Distances in mm between surface voxels, spacing-aware."
)
_ASSD_EMPTY_DEFINITION = (
    "ASSD = mean of the two directed mean surface distances (medpy). Empty masks: both empty -> "
    "Dice 1, HD95 0, ASSD 0; exactly one empty -> Dice 0, HD95 = ASSD = volume diagonal in mm "
    "(worst-case penalty, flagged)."
)


def check_hd95_convention(convention: str) -> str:
    """Return ``convention`` if it is one of :data:`HD95_CONVENTIONS`, else ``ValueError``."""
    if convention not in HD95_CONVENTIONS:
        raise ValueError(f"unknown HD95 convention {convention!r}; choose one of "
                         f"{', '.join(HD95_CONVENTIONS)}")
    return convention


def definitions(hd95_convention: str = HD95_MEDPY) -> str:
    """One paragraph defining every metric, with the given HD95 convention."""
    return " ".join((_SURFACE_DEFINITION, HD95_DEFINITIONS[check_hd95_convention(hd95_convention)],
                     _ASSD_EMPTY_DEFINITION))


DEFINITIONS = definitions()


def _as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    return pred, gt


def _as_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing.size != ndim:
        raise ValueError(f"spacing {tuple(spacing)} needs {ndim} values, one per array axis")
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise ValueError(f"spacing must be finite and positive, got {tuple(spacing)}")
    return spacing


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice overlap of two boolean masks of the same shape; 1.0 if both are empty."""
    pred, gt = _as_mask_pair(pred, gt)
    total = np.count_nonzero(pred) + np.count_nonzero(gt)  # faster than a boolean sum
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(np.logical_and(pred, gt)) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask (same shape): ``mask XOR erosion(mask)``, face
    neighbours."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, SURFACE_CONNECTIVITY)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def _union_bbox(*masks: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the union of non-empty masks, as slices."""
    union = np.logical_or.reduce(masks)
    return tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(union))


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty masks.

    Args:
        pred: boolean mask ``(X, Y, Z)``.
        gt: boolean mask of the same shape.
        spacing: voxel size in mm along each axis.

    Returns:
        ``(pred_to_gt, gt_to_pred)``: 1D float arrays with one distance per surface voxel of
        ``pred`` (to the surface of ``gt``) and of ``gt`` (to the surface of ``pred``).

    Raises:
        ValueError: a mask is empty (see the module's empty-mask rule), or shapes/spacing differ.
    """
    pred, gt = _as_mask_pair(pred, gt)
    spacing = _as_spacing(spacing, pred.ndim)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances are undefined for an empty mask")
    pred_surf, gt_surf = surface(pred), surface(gt)
    # Every surface voxel and its nearest partner lie in the union's bounding box, so cropping
    # to it leaves the distances exact and makes the distance transforms much cheaper.
    box = _union_bbox(pred_surf, gt_surf)
    pred_surf, gt_surf = pred_surf[box], gt_surf[box]
    to_gt = ndimage.distance_transform_edt(~gt_surf, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surf, sampling=spacing)
    return to_gt[pred_surf], to_pred[gt_surf]


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal length in mm of a volume of ``shape`` voxels: the empty-mask penalty."""
    extent = np.asarray(shape, dtype=np.float64) * _as_spacing(spacing, len(shape))
    return float(np.sqrt(np.sum(extent ** 2)))


def _empty_distance(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float | None:
    """The distance the empty-mask rule assigns, or ``None`` if both masks are non-empty."""
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if has_pred and has_gt:
        return None
    if not has_pred and not has_gt:
        return 0.0
    return volume_diagonal(pred.shape, spacing)


def _hd95(dists: tuple[np.ndarray, np.ndarray], convention: str) -> float:
    if convention == HD95_MONAI:
        return float(max(np.percentile(d, HD_PERCENTILE) for d in dists))
    return float(np.percentile(np.concatenate(dists), HD_PERCENTILE))


def _assd(dists: tuple[np.ndarray, np.ndarray]) -> float:
    return float((dists[0].mean() + dists[1].mean()) / 2)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], *,
         convention: str = HD95_MEDPY) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (empty-mask rule applied).

    ``convention``: ``"medpy"`` (pooled percentile) or ``"monai"`` (max of the directed
    percentiles); see the module docstring.
    """
    check_hd95_convention(convention)
    pred, gt = _as_mask_pair(pred, gt)
    _as_spacing(spacing, pred.ndim)
    penalty = _empty_distance(pred, gt, spacing)
    return (penalty if penalty is not None
            else _hd95(surface_distances(pred, gt, spacing), convention))


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm (empty-mask rule applied)."""
    pred, gt = _as_mask_pair(pred, gt)
    _as_spacing(spacing, pred.ndim)
    penalty = _empty_distance(pred, gt, spacing)
    return penalty if penalty is not None else _assd(surface_distances(pred, gt, spacing))


def binary_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], *,
                   hd95_convention: str = HD95_MEDPY) -> dict[str, float]:
    """Dice, HD95 and ASSD of two boolean masks, computing the surface distances once.

    Returns:
        ``{"dice": float, "hd95": mm, "assd": mm}`` with the empty-mask rule applied; HD95 in
        ``hd95_convention`` (``"medpy"`` or ``"monai"``).
    """
    check_hd95_convention(hd95_convention)
    pred, gt = _as_mask_pair(pred, gt)
    _as_spacing(spacing, pred.ndim)
    penalty = _empty_distance(pred, gt, spacing)
    if penalty is not None:
        return {"dice": dice(pred, gt), "hd95": penalty, "assd": penalty}
    dists = surface_distances(pred, gt, spacing)
    return {"dice": dice(pred, gt), "hd95": _hd95(dists, hd95_convention), "assd": _assd(dists)}


def empty_mask_flag(pred: np.ndarray, gt: np.ndarray) -> str | None:
    """``"prediction empty"`` / ``"ground truth empty"`` if exactly one mask is empty, else None."""
    pred, gt = _as_mask_pair(pred, gt)
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if has_pred == has_gt:
        return None
    return GT_EMPTY if has_pred else PRED_EMPTY


def check_class_values(class_values: Mapping[str, int]) -> dict[str, int]:
    """Validate a class name -> integer label value mapping; ``ValueError`` if it is unusable."""
    if not class_values:
        raise ValueError("class_values must name at least one class")
    checked = {}
    for name, value in class_values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"class {name!r} has a non-integer label value {value!r}")
        checked[str(name)] = int(value)
    if len(set(checked.values())) != len(checked):
        raise ValueError(f"class label values are not unique: {checked}")
    return checked


def empty_mask_flags(pred_labels: np.ndarray, gt_labels: np.ndarray,
                     class_values: Mapping[str, int]) -> dict[str, str]:
    """Classes penalised by the empty-mask rule: class name -> which mask is empty."""
    flags = {}
    for name, value in check_class_values(class_values).items():
        flag = empty_mask_flag(pred_labels == value, gt_labels == value)
        if flag is not None:
            flags[name] = flag
    return flags


def case_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray, class_values: Mapping[str, int],
                 spacing: Sequence[float], *, case_id: str | None = None,
                 hd95_convention: str = HD95_MEDPY) -> dict[str, dict[str, float]]:
    """Dice, HD95 and ASSD of every class of one case.

    Args:
        pred_labels: integer label volume ``(X, Y, Z)`` with on-disk label values.
        gt_labels: ground-truth label volume of the same shape and values.
        class_values: class name -> on-disk label value, e.g. ``{"LV": 3}``.
        spacing: voxel size in mm along ``(X, Y, Z)``.
        case_id: named in the log messages, if given.
        hd95_convention: ``"medpy"`` (pooled) or ``"monai"`` (max of directed); module docstring.

    Returns:
        class name -> ``{"dice": float, "hd95": mm, "assd": mm}``. Classes where exactly one of
        the masks is empty get the worst-case penalty (module docstring) and a logged warning.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from ground truth "
                         f"{gt_labels.shape}")
    class_values = check_class_values(class_values)
    _as_spacing(spacing, gt_labels.ndim)
    results = {}
    for name, value in class_values.items():
        pred, gt = pred_labels == value, gt_labels == value
        flag = empty_mask_flag(pred, gt)
        if flag is not None:
            log.warning("%sclass %s (value %d): %s; scored Dice 0 and HD95/ASSD = volume "
                        "diagonal", f"case {case_id}, " if case_id else "", name, value, flag)
        results[name] = binary_metrics(pred, gt, spacing, hd95_convention=hd95_convention)
    return results
