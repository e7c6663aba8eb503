"""Batched data augmentation and cropping on tensors.

:class:`RandomAffine2D` draws, per sample, random flips, a multiple of 90 degrees, a rotation, an
isotropic scaling and (optionally) a shift, composes them into ONE affine matrix per sample and
resamples the whole batch with a single :func:`torch.nn.functional.grid_sample` call: the image
bilinearly, the labels by nearest neighbour. Label pixels that come from outside the source image
become ``ignore_index`` (never background).

All randomness comes from a caller-supplied CPU :class:`torch.Generator`, so a run is
reproducible and can be resumed by restoring the generator's state.

Matrices follow :func:`torch.nn.functional.affine_grid` (``align_corners=False``): ``theta``
``(B, 2, 3)`` maps *output* normalised coordinates ``(x, y) in [-1, 1]`` to the *input*
coordinates to sample from.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.data.warp import ALIGN_CORNERS, pixel_to_grid, sampling_grid
from medcl.errors import ConfigError

PADDING_MODES = ("zeros", "border", "reflection")
QUARTER_TURNS = 4
# columns of the per-sample uniform draws, always all drawn so the generator advances the same
# amount whatever the options
_FLIP_X, _FLIP_Y, _ROT90, _ANGLE, _SCALE, _SHIFT_X, _SHIFT_Y = range(7)
_NUM_DRAWS = 7
_ROUND_TO_ZERO = 1e-12  # |cos|, |sin| below this are set to 0 (exact quarter turns)


def _check_pair(image: Tensor, labels: Tensor | None) -> None:
    if image.dim() != 4:
        raise ValueError(f"expected image (B, C, H, W), got shape {tuple(image.shape)}")
    if not image.dtype.is_floating_point:
        raise ValueError(f"image must be a floating-point tensor, got {image.dtype}")
    if labels is not None:
        expected = (image.shape[0], *image.shape[2:])
        if tuple(labels.shape) != expected:
            raise ValueError(f"expected labels (B, H, W) = {expected} to match image "
                             f"{tuple(image.shape)}, got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point:
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (random numbers are drawn on "
                         "the CPU and moved to the data's device)")


def apply_affine(image: Tensor, labels: Tensor | None, theta: Tensor, *, ignore_index: int,
                 image_padding: str = "zeros") -> tuple[Tensor, Tensor | None]:
    """Resample a batch with one affine matrix per sample.

    Args:
        image: ``(B, C, H, W)`` float; resampled bilinearly.
        labels: ``(B, H, W)`` integer class indices, or ``None``; resampled by nearest neighbour.
            Pixels sampled from outside the source become ``ignore_index``; source pixels equal
            to ``ignore_index`` stay ignored.
        theta: ``(B, 2, 3)`` matrices (see the module docstring); moved to the image's device.
        ignore_index: value of unlabelled pixels.
        image_padding: ``grid_sample`` padding of the image: ``"zeros"``, ``"border"`` or
            ``"reflection"``.

    Returns:
        ``(image (B, C, H, W), labels (B, H, W) or None)`` with the input dtypes.
    """
    _check_pair(image, labels)
    if image_padding not in PADDING_MODES:
        raise ConfigError(f"unknown image_padding {image_padding!r}; "
                          f"valid: {', '.join(PADDING_MODES)}")
    batch = image.shape[0]
    if tuple(theta.shape) != (batch, 2, 3):
        raise ValueError(f"expected theta ({batch}, 2, 3), got {tuple(theta.shape)}")
    theta = theta.to(device=image.device, dtype=image.dtype)
    grid = sampling_grid(theta, image.shape)
    out_image = F.grid_sample(image, grid, mode="bilinear", padding_mode=image_padding,
                              align_corners=ALIGN_CORNERS)
    if labels is None:
        return out_image, None
    # shift by one so that the zeros padding marks "outside the source image"
    shifted = (labels.to(torch.float32) + 1).unsqueeze(1)
    sampled = F.grid_sample(shifted, grid.to(torch.float32), mode="nearest",
                            padding_mode="zeros", align_corners=ALIGN_CORNERS)
    sampled = sampled.squeeze(1).round().to(labels.dtype)
    out_labels = torch.where(sampled == 0, torch.full_like(sampled, ignore_index), sampled - 1)
    return out_image, out_labels


class RandomAffine2D:
    """Random flips, 90-degree turns, rotation, isotropic scaling and shift as one affine warp.

    Args:
        rotate_degrees: rotation angle drawn uniformly from ``[-rotate_degrees, rotate_degrees]``.
        scale_range: ``(low, high)``; the image is magnified by a factor drawn uniformly from it.
        flip_prob: probability of flipping each axis (independently).
        rot90: also turn by ``k * 90`` degrees, ``k`` uniform in ``{0, 1, 2, 3}``. On non-square
            images the corners turned out of the field of view are lost (labels become ignored).
        translate: shift drawn uniformly from ``[-translate, translate]`` times the image size,
            per axis.
        image_padding: how the image is filled outside the source: ``"zeros"``, ``"border"`` or
            ``"reflection"`` (labels there are always ``ignore_index``).

    Rotation, flips and scaling are applied in pixel units about the image centre, so non-square
    images are not sheared.

    Call: ``aug(image (B, C, H, W) float, labels (B, H, W) long | None, *, ignore_index,
    generator, return_matrices=False) -> (image, labels)`` or ``(image, labels, theta (B, 2, 3))``.
    """

    def __init__(self, rotate_degrees: float = 15.0,
                 scale_range: Sequence[float] = (0.85, 1.15), flip_prob: float = 0.5,
                 rot90: bool = True, translate: float = 0.0,
                 image_padding: str = "zeros") -> None:
        if rotate_degrees < 0:
            raise ConfigError(f"rotate_degrees must be >= 0, got {rotate_degrees}")
        scale_range = tuple(float(s) for s in scale_range)
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, "
                              f"got {scale_range}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ConfigError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if translate < 0:
            raise ConfigError(f"translate must be >= 0, got {translate}")
        if image_padding not in PADDING_MODES:
            raise ConfigError(f"unknown image_padding {image_padding!r}; "
                              f"valid: {', '.join(PADDING_MODES)}")
        self.rotate_degrees = float(rotate_degrees)
        self.scale_range = scale_range
        self.flip_prob = float(flip_prob)
        self.rot90 = bool(rot90)
        self.translate = float(translate)
        self.image_padding = image_padding

    @property
    def is_identity(self) -> bool:
        """True when every transform is off (calling it would only resample)."""
        return (self.rotate_degrees == 0 and self.scale_range == (1.0, 1.0)
                and self.flip_prob == 0 and not self.rot90 and self.translate == 0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rotate_degrees={self.rotate_degrees}, "
                f"scale_range={self.scale_range}, flip_prob={self.flip_prob}, "
                f"rot90={self.rot90}, translate={self.translate}, "
                f"image_padding={self.image_padding!r})")

    def sample_matrices(self, batch_size: int, height: int, width: int, *,
                        generator: torch.Generator) -> Tensor:
        """Draw one affine matrix per sample.

        Returns:
            ``(batch_size, 2, 3)`` float32 CPU tensor for :func:`apply_affine` /
            ``F.affine_grid`` (output -> input normalised coordinates).
        """
        _check_generator(generator)
        draws = torch.rand((batch_size, _NUM_DRAWS), generator=generator, dtype=torch.float64)

        flip_x = torch.where(draws[:, _FLIP_X] < self.flip_prob, -1.0, 1.0).to(torch.float64)
        flip_y = torch.where(draws[:, _FLIP_Y] < self.flip_prob, -1.0, 1.0).to(torch.float64)
        if self.rot90:
            turns = (draws[:, _ROT90] * QUARTER_TURNS).floor().clamp(max=QUARTER_TURNS - 1)
        else:
            turns = torch.zeros(batch_size, dtype=torch.float64)
        radians = math.radians(self.rotate_degrees) * (2 * draws[:, _ANGLE] - 1)
        angle = radians + turns * (math.pi / 2)
        low, high = self.scale_range
        magnification = low + (high - low) * draws[:, _SCALE]

        # pixel-space sampling matrix: A = R(angle) @ diag(flip) / magnification
        cos, sin = torch.cos(angle), torch.sin(angle)
        # exact values for the 90-degree turns when there is no free rotation
        cos = torch.where(cos.abs() < _ROUND_TO_ZERO, torch.zeros_like(cos), cos)
        sin = torch.where(sin.abs() < _ROUND_TO_ZERO, torch.zeros_like(sin), sin)
        linear = torch.stack([torch.stack([cos * flip_x, -sin * flip_y], -1),
                              torch.stack([sin * flip_x, cos * flip_y], -1)], -2)
        linear = linear / magnification.view(-1, 1, 1)

        linear = pixel_to_grid(linear, height, width)
        shift = 2 * self.translate * (2 * draws[:, [_SHIFT_X, _SHIFT_Y]] - 1)
        theta = torch.cat([linear, shift.unsqueeze(-1)], dim=-1)
        return theta.to(torch.float32)

    def __call__(self, image: Tensor, labels: Tensor | None, *, ignore_index: int,
                 generator: torch.Generator, return_matrices: bool = False
                 ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor]:
        """Augment a batch.

        Args:
            image: ``(B, C, H, W)`` float.
            labels: ``(B, H, W)`` integer class indices, or ``None``.
            ignore_index: value of unlabelled pixels (given to pixels from outside the image).
            generator: CPU generator supplying all randomness.
            return_matrices: also return the ``(B, 2, 3)`` matrices used (on the image's device).

        Returns:
            ``(image, labels)``, or ``(image, labels, theta)`` with ``return_matrices``.
        """
        _check_pair(image, labels)
        batch, _, height, width = image.shape
        theta = self.sample_matrices(batch, height, width, generator=generator)
        theta = theta.to(image.device)
        out_image, out_labels = apply_affine(image, labels, theta, ignore_index=ignore_index,
                                             image_padding=self.image_padding)
        if return_matrices:
            return out_image, out_labels, theta
        return out_image, out_labels


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"crop size must be two positive integers (h, w), got {size}")
    return size


def _check_crop_inputs(image: Tensor, labels: Tensor | None) -> None:
    if image.dim() < 2:
        raise ValueError(f"expected image (C, H, W), got shape {tuple(image.shape)}")
    if labels is not None and tuple(labels.shape[-2:]) != tuple(image.shape[-2:]):
        raise ValueError(f"image {tuple(image.shape)} and labels {tuple(labels.shape)} differ "
                         f"in height and width")


def _pad_to(x: Tensor, size: tuple[int, int], value: float) -> Tensor:
    """Pad the last two dims of ``x`` evenly (extra pixel after) to at least ``size``."""
    extra_h = max(size[0] - x.shape[-2], 0)
    extra_w = max(size[1] - x.shape[-1], 0)
    if not extra_h and not extra_w:
        return x
    pad = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    return F.pad(x, pad, mode="constant", value=value)


def _crop(image: Tensor, labels: Tensor | None, size: tuple[int, int], top: int, left: int
          ) -> tuple[Tensor, Tensor | None]:
    rows, cols = slice(top, top + size[0]), slice(left, left + size[1])
    return image[..., rows, cols], None if labels is None else labels[..., rows, cols]


def random_crop(image: Tensor, labels: Tensor | None, size: Sequence[int], *, ignore_index: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Crop a random ``size`` window, padding first where the image is smaller.

    Args:
        image: ``(C, H, W)`` (any leading dims); padded with 0.
        labels: ``(H, W)`` integer class indices (any leading dims), or ``None``; padded with
            ``ignore_index``.
        size: ``(h, w)`` of the output.
        generator: CPU generator supplying the offsets.

    Returns:
        ``(image (C, h, w), labels (h, w) or None)``.
    """
    size = _check_size(size)
    _check_crop_inputs(image, labels)
    _check_generator(generator)
    image = _pad_to(image, size, 0.0)
    if labels is not None:
        labels = _pad_to(labels, size, ignore_index)
    offsets = [int(torch.randint(0, image.shape[d] - size[i] + 1, (1,), generator=generator))
               for i, d in enumerate((-2, -1))]
    return _crop(image, labels, size, *offsets)


def center_crop_or_pad(image: Tensor, labels: Tensor | None, size: Sequence[int], *,
                       ignore_index: int) -> tuple[Tensor, Tensor | None]:
    """Crop the centre ``size`` window, padding evenly where the image is smaller.

    Args:
        image: ``(C, H, W)`` (any leading dims); padded with 0.
        labels: ``(H, W)`` integer class indices (any leading dims), or ``None``; padded with
            ``ignore_index``.
        size: ``(h, w)`` of the output.

    Returns:
        ``(image (C, h, w), labels (h, w) or None)``.
    """
    size = _check_size(size)
    _check_crop_inputs(image, labels)
    image = _pad_to(image, size, 0.0)
    if labels is not None:
        labels = _pad_to(labels, size, ignore_index)
    top = (image.shape[-2] - size[0]) // 2
    left = (image.shape[-1] - size[1]) // 2
    return _crop(image, labels, size, top, left)


def center_window(size: Sequence[int], window: Sequence[int]
                  ) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Where :func:`center_crop_or_pad` puts an image of ``size = (H, W)`` in its ``window =
    (h, w)`` output: ``((rows, cols) of the image, (rows, cols) of the window)`` that hold the
    same pixels, to paste a window's result back onto the image grid."""
    image_part, window_part = [], []
    for n, m in zip(_check_size(size), _check_size(window)):
        if n >= m:  # cropped: the window is the image's centre
            start = (n - m) // 2
            image_part.append(slice(start, start + m))
            window_part.append(slice(0, m))
        else:  # padded evenly, the extra pixel after
            start = (m - n) // 2
            image_part.append(slice(0, n))
            window_part.append(slice(start, start + n))
    return tuple(image_part), tuple(window_part)


def crop_around(image: Tensor, labels: Tensor | None, size: Sequence[int], centre: Sequence[int],
                *, ignore_index: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Crop a ``size`` window that contains the pixel ``centre = (row, col)`` at a random
    position inside it (clamped to the image), padding first where the image is smaller.

    Shapes as :func:`random_crop`; the class-balanced sampler uses it to show a small structure.
    """
    size = _check_size(size)
    _check_crop_inputs(image, labels)
    _check_generator(generator)
    # where the centre lands after the even padding of _pad_to
    shift = [max(size[i] - image.shape[d], 0) // 2 for i, d in enumerate((-2, -1))]
    image = _pad_to(image, size, 0.0)
    if labels is not None:
        labels = _pad_to(labels, size, ignore_index)
    offsets = []
    for i, d in enumerate((-2, -1)):
        within = int(torch.randint(0, size[i], (1,), generator=generator))
        start = int(centre[i]) + shift[i] - within
        offsets.append(min(max(start, 0), image.shape[d] - size[i]))
    return _crop(image, labels, size, *offsets)
