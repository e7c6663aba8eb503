"""Volume preprocessing shared by training, validation and inference.

A volume ``(X, Y, Z[, C])`` becomes a stack of 2D slices ``(Z, C, H, W)``:

1. per-channel intensity normalisation over the whole volume (optionally after clipping to
   percentiles), so that every slice of a volume sees the same statistics;
2. in-plane resampling to ``target_spacing`` mm (bilinear for images, nearest for labels);
   slices (axis ``Z``) are never resampled.

Training crops/pads these slices; inference predicts whole slices and resamples the
probabilities back to the input grid (:func:`restore_probs`), so both see the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medcl.data.labels import LabelSpec
from medcl.errors import ConfigError

NORMALIZATIONS = ("zscore", "minmax", "none")
#: the largest resampled slice (H * W) medcl builds: 4096 x 4096 pixels (64 MiB per channel).
MAX_SLICE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class PreprocessConfig:
    """How volumes are turned into slices.

    Attributes:
        target_spacing: in-plane spacing in mm after resampling; ``None`` keeps each volume's own.
        normalization: ``"zscore"`` (mean 0, std 1 per volume and channel), ``"minmax"`` (to
            [0, 1]) or ``"none"``.
        clip_percentiles: ``(low, high)`` percentiles to clip intensities to before
            normalising, or ``None``.
        nonzero_mask: treat the region outside the acquired field of view
            (:func:`field_of_view`) as known background: it is left out of the normalisation
            statistics and set to 0 after normalising, its unlabelled pixels are labelled
            background in training, and predictions there are background (nnU-Net's nonzero
            mask, for zero-filled MR acquisitions).
        windows: per channel index, an intensity window ``(low, high)`` or ``None``: a channel
            with a window is clipped to it and scaled to [0, 1] (fixed per-dataset bounds, e.g.
            a CT window in Hounsfield units) instead of ``normalization``.
    """

    target_spacing: float | None = None
    normalization: str = "zscore"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    nonzero_mask: bool = False
    windows: tuple[tuple[float, float] | None, ...] = ()

    def __post_init__(self) -> None:
        if self.target_spacing is not None and not self.target_spacing > 0:
            raise ConfigError(f"target_spacing must be > 0 mm, got {self.target_spacing}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"unknown normalization {self.normalization!r}; valid: "
                              f"{', '.join(NORMALIZATIONS)}")
        if self.clip_percentiles is not None:
            low, high = self.clip_percentiles
            if not 0 <= low < high <= 100:
                raise ConfigError(f"clip_percentiles must satisfy 0 <= low < high <= 100, "
                                  f"got {self.clip_percentiles}")


def field_of_view(image: np.ndarray) -> np.ndarray:
    """Voxels inside the acquired field of view, ``(X, Y, Z)`` bool, of ``image (X, Y, Z, C)``.

    Outside are the voxels that hold the volume's minimum in every channel and are connected
    (4-connectivity, within their slice) to the slice's border: the zero filling around an
    acquisition. Dark voxels enclosed by the body stay inside.
    """
    at_min = np.all(image == image.min(axis=(0, 1, 2), keepdims=True), axis=-1)
    inside = np.ones(at_min.shape, dtype=bool)
    for z in range(at_min.shape[2]):
        comp, count = ndimage.label(at_min[..., z])
        if count:
            border = np.unique(np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]]))
            inside[..., z] = ~np.isin(comp, border[border > 0])
    return inside


#: a volume has zero-filled acquisition borders when at least this share of its voxels lies in
#: the filling (MSCMR and MyoPS MR: 19-45 %; a CT or an MR with noisy air: 0)
ZERO_FILL_MIN_FRACTION = 0.05


def zero_filled_fraction(image: np.ndarray) -> float:
    """Share of the voxels of ``image (X, Y, Z, C)`` outside the acquired field of view."""
    return 1.0 - float(field_of_view(image).mean())


def has_zero_filled_borders(images: Sequence[np.ndarray]) -> tuple[bool, list[float]]:
    """Whether the typical (median) volume of ``images`` has zero-filled acquisition borders,
    and each volume's zero-filled share."""
    fractions = [zero_filled_fraction(image) for image in images]
    return bool(fractions) and float(np.median(fractions)) >= ZERO_FILL_MIN_FRACTION, fractions


def window_intensity(channel: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip ``channel`` to ``window = (low, high)`` and scale it to [0, 1], float32."""
    low, high = window
    out = np.clip(channel.astype(np.float32), low, high)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return out


def normalize_intensity(image: np.ndarray, cfg: PreprocessConfig,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise ``image (X, Y, Z, C)`` per channel over the whole volume; float32 out.

    With ``mask (X, Y, Z)`` the statistics come from the masked voxels only and the voxels
    outside are set to 0.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[-1]):
        window = cfg.windows[c] if c < len(cfg.windows) else None
        if window is not None:
            out[..., c] = window_intensity(image[..., c], window)
            if mask is not None:
                out[..., c][~mask] = 0.0
            continue
        chan = image[..., c].astype(np.float32)
        values = chan[mask] if mask is not None and mask.any() else chan
        if cfg.clip_percentiles is not None:
            low, high = np.percentile(values, cfg.clip_percentiles)
            chan, values = np.clip(chan, low, high), np.clip(values, low, high)
        if cfg.normalization == "zscore":
            chan = (chan - values.mean()) / max(float(values.std()), 1e-8)
        elif cfg.normalization == "minmax":
            lo, hi = float(values.min()), float(values.max())
            chan = (chan - lo) / max(hi - lo, 1e-8)
        if mask is not None:
            chan = np.where(mask, chan, 0.0)
        out[..., c] = chan
    return out


def resampled_size(shape_xy: tuple[int, int], spacing_xy: tuple[float, float],
                   target_spacing: float | None) -> tuple[int, int]:
    """In-plane size ``(H, W)`` after resampling a ``shape_xy`` grid to ``target_spacing``.

    Raises:
        ConfigError: the result would exceed :data:`MAX_SLICE_PIXELS`.
    """
    if target_spacing is None:
        return int(shape_xy[0]), int(shape_xy[1])
    size = tuple(max(1, int(round(n * s / target_spacing))) for n, s in zip(shape_xy, spacing_xy))
    if size[0] * size[1] > MAX_SLICE_PIXELS:
        raise ConfigError(f"target_spacing {target_spacing} mm would resample a "
                          f"{shape_xy[0]}x{shape_xy[1]} slice at {spacing_xy[0]:g}x"
                          f"{spacing_xy[1]:g} mm to {size[0]}x{size[1]} pixels, more than the "
                          f"{MAX_SLICE_PIXELS} allowed; choose a larger target spacing")
    return size


def run_preprocessing(cfg: dict, spec: LabelSpec) -> PreprocessConfig:
    """The preprocessing a run trained with, from its saved configuration ``cfg`` (a dict, as in
    a checkpoint or a model file) and its label definition (the channel windows)."""
    return PreprocessConfig(target_spacing=cfg["target_spacing"],
                            normalization=cfg["normalization"],
                            nonzero_mask=cfg.get("nonzero_mask", False),
                            windows=spec.channel_windows())


def image_to_slices(image: np.ndarray, spacing_xy: tuple[float, float],
                    cfg: PreprocessConfig, mask: np.ndarray | None = None) -> torch.Tensor:
    """``image (X, Y, Z, C)`` -> normalised, resampled slices ``(Z, C, H, W)`` float32.

    ``mask``: the field of view (see :func:`normalize_intensity`), when ``cfg.nonzero_mask``.
    """
    norm = normalize_intensity(image, cfg, mask)
    slices = torch.from_numpy(np.ascontiguousarray(norm.transpose(2, 3, 0, 1)))
    size = resampled_size(image.shape[:2], spacing_xy, cfg.target_spacing)
    if size != tuple(slices.shape[-2:]):
        slices = F.interpolate(slices, size=size, mode="bilinear", align_corners=False,
                               antialias=True)
    return slices.contiguous()


def labels_to_slices(labels: np.ndarray, spacing_xy: tuple[float, float],
                     cfg: PreprocessConfig) -> torch.Tensor:
    """Class-index volume ``(X, Y, Z)`` -> resampled slices ``(Z, H, W)`` int64 (nearest)."""
    slices = torch.from_numpy(np.ascontiguousarray(labels.transpose(2, 0, 1)))
    size = resampled_size(labels.shape[:2], spacing_xy, cfg.target_spacing)
    if size != tuple(slices.shape[-2:]):
        resized = F.interpolate(slices[:, None].float(), size=size, mode="nearest-exact")
        slices = resized[:, 0].round().long()
    return slices.long().contiguous()


def restore_probs(probs: torch.Tensor, shape_xy: tuple[int, int]) -> torch.Tensor:
    """Resample slice probabilities ``(Z, K, H, W)`` back to the input grid ``(Z, K, X, Y)``."""
    if tuple(probs.shape[-2:]) == tuple(shape_xy):
        return probs
    return F.interpolate(probs, size=tuple(shape_xy), mode="bilinear", align_corners=False)


def pad_to_multiple(slices: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``(N, C, H, W)`` at the bottom/right to multiples of ``divisor``.

    Returns the padded tensor and the original ``(H, W)`` to crop back to.
    """
    h, w = slices.shape[-2:]
    pad_h, pad_w = (-h) % divisor, (-w) % divisor
    if pad_h or pad_w:
        slices = F.pad(slices, (0, pad_w, 0, pad_h))
    return slices, (h, w)
