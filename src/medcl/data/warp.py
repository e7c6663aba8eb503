"""2D affine warps of batches, shared by the augmentation and MedCL's mixing.

Matrices follow :func:`torch.nn.functional.affine_grid` with ``align_corners=False``: ``theta``
``(N, 2, 3)`` maps *output* normalised coordinates ``(x, y) in [-1, 1]`` to the *input*
coordinates to sample from. :func:`pixel_to_grid` turns a linear map written in pixel units
(rotations, flips and scalings about the centre, so non-square images are not sheared) into
that normalised form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ALIGN_CORNERS = False


def pixel_to_grid(linear: Tensor, height: int, width: int) -> Tensor:
    """``D^-1 A D`` with ``D = diag(W/2, H/2)``: pixel-space linear maps ``A (N, 2, 2)`` in
    normalised grid coordinates, in ``linear``'s dtype."""
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    ratio = half.view(1, 1, 2) / half.view(1, 2, 1)
    return linear * ratio.to(linear.dtype)


def rotation_matrices(angles: Tensor, height: int, width: int) -> Tensor:
    """``(N, 2, 3)`` matrices rotating by ``angles (N,)`` (radians) about the image centre."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shift = torch.zeros(*angles.shape, 2, 1, dtype=angles.dtype, device=angles.device)
    return torch.cat([pixel_to_grid(linear, height, width), shift], -1)


def sampling_grid(theta: Tensor, shape: torch.Size | list[int]) -> Tensor:
    """The ``(N, H, W, 2)`` sampling grid of ``theta (N, 2, 3)`` for an ``(N, C, H, W)`` batch."""
    return F.affine_grid(theta, list(shape), align_corners=ALIGN_CORNERS)


def warp(x: Tensor, theta: Tensor, *, mode: str, padding_mode: str = "zeros") -> Tensor:
    """Warp ``x (N, C, H, W)`` with ``theta (N, 2, 3)`` (moved to ``x``'s device and dtype)."""
    grid = sampling_grid(theta.to(x.device, x.dtype), x.shape)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode,
                         align_corners=ALIGN_CORNERS)
