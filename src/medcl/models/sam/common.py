"""Small layers shared by the SAM-family modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel axis of a ``(B, C, H, W)`` feature map.

    Each pixel's ``C`` values are normalised to zero mean and unit variance, then scaled by
    ``weight`` and shifted by ``bias`` (both ``(C,)``).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    ``(..., input_dim) -> (..., output_dim)``; the layers are ``self.layers[i]``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def pad_to_multiple(x: Tensor, size: int) -> tuple[Tensor, int, int]:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom/right so ``H`` and ``W`` divide by ``size``.

    Returns the padded map and the padded height and width.
    """
    _, h, w, _ = x.shape
    pad_h, pad_w = (-h) % size, (-w) % size
    if pad_h or pad_w:
        x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, h + pad_h, w + pad_w


def window_partition(x: Tensor, size: int) -> Tensor:
    """``(B, H, W, C)`` with ``H, W`` multiples of ``size`` -> ``(B * nH * nW, size * size, C)``."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(-1, size * size, c)


def window_unpartition(windows: Tensor, size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nH * nW, size * size, C) -> (B, H, W, C)``."""
    nh, nw = height // size, width // size
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, size, size, c).transpose(2, 3)
    return x.reshape(-1, height, width, c)
