"""LiteMedSAM pre- and post-processing of MR slices, box prompts and mask logits.

Following LiteMedSAM's authors for MR images:

1. per volume (:func:`normalize_volume`): clip to the 0.5-99.5 percentiles of the non-zero
   voxels, scale to 0-255, keep zero voxels at 0, cast to ``uint8``;
2. per slice (:func:`prepare_slice`): repeat to 3 channels, resize so the longest side is ``S``
   with area interpolation, min-max to ``[0, 1]``, zero-pad bottom/right to ``S x S``;
3. box prompts (:func:`scale_boxes`) are multiplied by ``S / max(H, W)``;
4. mask logits (:func:`postprocess_logits`) are brought to ``S x S``, cropped to the resized
   slice and resized back to ``(H, W)`` bilinearly; foreground where the logit is > 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5
MAX_INTENSITY = 255.0
MIN_RANGE = 1e-8  # min-max normalisation of a constant slice divides by this


def normalize_volume(volume: np.ndarray, lower: float = LOWER_PERCENTILE,
                     upper: float = UPPER_PERCENTILE) -> np.ndarray:
    """Clip to percentiles of the non-zero voxels and scale to ``uint8`` 0-255 (zeros stay 0).

    Works on any array shape; an all-zero volume stays zero.
    """
    volume = np.asarray(volume, dtype=np.float32)
    nonzero = volume[volume != 0]
    if nonzero.size == 0:
        return np.zeros(volume.shape, dtype=np.uint8)
    lo, hi = np.percentile(nonzero, [lower, upper])
    scaled = (np.clip(volume, lo, hi) - lo) / max(hi - lo, MIN_RANGE) * MAX_INTENSITY
    scaled[volume == 0] = 0
    return np.rint(scaled).astype(np.uint8)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` after scaling ``(height, width)`` so the longest side is ``size``."""
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def area_weights(n_in: int, n_out: int) -> Tensor:
    """``(n_out, n_in)`` matrix of area interpolation along one axis.

    Output pixel ``j`` covers input interval ``[j, j + 1) * n_in / n_out``; its value is the mean
    of the input over that interval, each input pixel weighted by the length it overlaps.
    """
    step = n_in / n_out
    starts = torch.arange(n_out, dtype=torch.float64)[:, None] * step
    left = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(starts + step, left + 1) - torch.maximum(starts, left)).clamp(min=0)
    return (overlap / step).float()


def resize_area(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-interpolate ``(..., H, W)`` to ``(..., h, w)`` (exact fractional overlaps)."""
    rows = area_weights(image.shape[-2], size[0]).to(image)
    cols = area_weights(image.shape[-1], size[1]).to(image)
    return rows @ image @ cols.T


def prepare_slice(slice_u8: np.ndarray, size: int = 256) -> tuple[Tensor, tuple[int, int]]:
    """One ``(H, W)`` slice (0-255, from :func:`normalize_volume`) -> model input.

    Returns:
        ``image (3, size, size)`` float32 in ``[0, 1]`` (zero padding at the bottom/right) and
        the ``(h, w)`` of the resized content before padding.
    """
    if np.ndim(slice_u8) != 2:
        raise ValueError(f"expected a 2D slice (H, W), got shape {np.shape(slice_u8)}")
    image = torch.as_tensor(np.asarray(slice_u8, dtype=np.float32))
    h, w = resized_shape(*image.shape, size)
    image = resize_area(image, (h, w))
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=MIN_RANGE)
    image = F.pad(image, (0, size - w, 0, size - h))
    return image.expand(3, -1, -1).contiguous(), (h, w)


def scale_boxes(boxes: np.ndarray | Tensor, original_size: tuple[int, int],
                size: int = 256) -> Tensor:
    """``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in original pixels -> model input pixels."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    return boxes * (size / max(original_size))


def postprocess_logits(logits: Tensor, resized_size: tuple[int, int],
                       original_size: tuple[int, int], image_size: int = 256) -> Tensor:
    """Mask logits ``(B, M, m, m)`` of an ``image_size`` input -> ``(B, M, H, W)`` logits.

    Low-resolution logits (``m < image_size``, as SAM ViT-B's) are first upsampled bilinearly to
    ``image_size``; then the padding is cropped (``resized_size``) and the result resized to
    ``original_size`` bilinearly. Still logits: threshold at 0 for a mask.
    """
    if logits.shape[-1] != image_size:
        logits = F.interpolate(logits, size=(image_size, image_size), mode="bilinear",
                               align_corners=False)
    logits = logits[..., :resized_size[0], :resized_size[1]]
    return F.interpolate(logits, size=tuple(original_size), mode="bilinear", align_corners=False)


def box_from_mask(mask: np.ndarray) -> np.ndarray | None:
    """Tight box ``(x0, y0, x1, y1)`` (column, row pixel indices, inclusive) of a 2D mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)


@torch.no_grad()
def predict_with_boxes(model, slice_u8: np.ndarray, boxes: np.ndarray, *,
                       joint: bool = False) -> Tensor:
    """Segment one ``(H, W)`` uint8 slice with ``(N, 4)`` box prompts in its own pixels.

    The image is encoded once and decoded once per box, or, with ``joint``, all boxes in one
    decoder pass (:meth:`SamModel.predict_mask_groups`). ``model`` is a :class:`SamModel`; it is
    used as given (call ``model.eval()`` first). Returns ``(N, H, W)`` **logits** (> 0 is
    foreground) on the model's device.
    """
    device = next(model.parameters()).device
    size = model.image_size
    image, resized = prepare_slice(slice_u8, size)
    embedding = model.encode_images(image[None].to(device))
    box_in = scale_boxes(boxes, slice_u8.shape, size).to(device)
    if joint:
        sparse, _ = model.prompt_encoder(boxes=box_in)
        logits = model.predict_mask_groups(embedding, sparse[None])[0, :, None]
    else:
        logits, _ = model.predict_masks(embedding, box_in)
    return postprocess_logits(logits, resized, slice_u8.shape, size)[:, 0]
