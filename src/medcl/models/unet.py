"""A 2D U-Net that returns per-pixel class logits.

The encoder has ``len(widths)`` levels; level ``i`` holds two ``conv3x3 -> norm -> LeakyReLU``
blocks with ``widths[i]`` channels, and levels are joined by a 2x down-sampling. The decoder mirrors
it with 2x up-sampling, concatenation of the encoder's skip connection and two more conv blocks.
A 1x1 convolution maps the last decoder features to ``num_classes`` logits.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .segmenter import Segmenter

NORMS = ("batch", "instance", "group", "none")
DOWNSAMPLES = ("maxpool", "strided")
UPSAMPLES = ("transpose", "bilinear")
LEAKY_SLOPE = 0.01
MAX_GROUPS = 8  # group norm: at most this many groups, fewer when the width is not divisible
KERNEL = 3
SCALE = 2  # every down/up step halves/doubles the height and width


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, MAX_GROUPS), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two ``conv3x3 -> norm -> LeakyReLU`` layers (``(B, in, H, W) -> (B, out, H, W)``).

    Dropout (``nn.Dropout2d``) is applied between the two layers when ``dropout > 0``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch",
                 dropout: float = 0.0) -> None:
        bias = norm == "none"
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, KERNEL, padding=KERNEL // 2, bias=bias),
            _norm(norm, out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers += [
            nn.Conv2d(out_channels, out_channels, KERNEL, padding=KERNEL // 2, bias=bias),
            _norm(norm, out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        super().__init__(*layers)


class UpBlock(nn.Module):
    """Up-sample ``x`` 2x, concatenate the skip connection, then a :class:`ConvBlock`.

    ``forward(x (B, in, h, w), skip (B, skip, 2h, 2w)) -> (B, out, 2h, 2w)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, *,
                 norm: str = "batch", dropout: float = 0.0, upsample: str = "transpose") -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, SCALE, stride=SCALE)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=SCALE, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        self.conv = ConvBlock(out_channels + skip_channels, out_channels, norm=norm,
                              dropout=dropout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(Segmenter):
    """2D U-Net returning logits (a :class:`~medcl.models.segmenter.Segmenter` whose mixable
    features are the image itself, without a union output).

    Args:
        in_channels: number of input channels ``C``.
        num_classes: number of output classes ``K`` (background included).
        widths: channels of each level, from full resolution down to the bottleneck;
            ``depth = len(widths) - 1`` down-sampling steps.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        dropout: ``nn.Dropout2d`` probability inside every conv block (0 disables it).
        downsample: ``"maxpool"`` (2x2 max pooling) or ``"strided"`` (3x3 stride-2 conv).
        upsample: ``"transpose"`` (2x2 transposed conv) or ``"bilinear"`` (bilinear + 1x1 conv).

    Shapes:
        input ``(B, C, H, W)`` float, with ``H`` and ``W`` divisible by :attr:`size_divisor`;
        output ``(B, K, H, W)`` **logits** (no softmax applied).
    """

    def __init__(self, in_channels: int, num_classes: int, *,
                 widths: Sequence[int] = (16, 32, 64, 128, 256), norm: str = "batch",
                 dropout: float = 0.0, downsample: str = "maxpool",
                 upsample: str = "transpose") -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
        size_divisor = self.size_divisor_for(widths)
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if downsample not in DOWNSAMPLES:
            raise ConfigError(f"unknown downsample {downsample!r}; valid: {', '.join(DOWNSAMPLES)}")
        if upsample not in UPSAMPLES:
            raise ConfigError(f"unknown upsample {upsample!r}; valid: {', '.join(UPSAMPLES)}")

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = widths
        self.depth = len(widths) - 1
        self.size_divisor = size_divisor

        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = in_channels
        for level, width in enumerate(widths):
            self.encoders.append(ConvBlock(prev, width, norm=norm, dropout=dropout))
            if level < self.depth:
                if downsample == "maxpool":
                    self.downs.append(nn.MaxPool2d(SCALE))
                else:
                    self.downs.append(nn.Conv2d(width, width, KERNEL, stride=SCALE,
                                                padding=KERNEL // 2))
            prev = width
        self.decoders = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], widths[level], norm=norm, dropout=dropout,
                    upsample=upsample)
            for level in reversed(range(self.depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @staticmethod
    def size_divisor_for(widths: Sequence[int]) -> int:
        """What the height and width of an input must be divisible by for a UNet of ``widths``:
        ``2 ** depth`` (the ``depth`` down-sampling steps halve them).

        Raises:
            ConfigError: ``widths`` has fewer than 2 values or one below 1.
        """
        widths = tuple(widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ConfigError(f"widths needs at least 2 positive values, got {widths}")
        return SCALE ** (len(widths) - 1)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Smallest ``(H', W') >= (height, width)`` that the network accepts."""
        d = self.size_divisor
        return (-(-height // d) * d, -(-width // d) * d)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with divisible H, W."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"height and width must be divisible by 2**depth={self.size_divisor}, "
                f"got ({h}, {w}); pad to {self.padded_size(h, w)}")

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the last decoder features.

        Args:
            x: ``(B, C, H, W)`` image.

        Returns:
            ``(logits (B, K, H, W), features (B, widths[0], H, W))``.
        """
        self.check_input(x)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.depth:
                skips.append(x)
                x = self.downs[level](x)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x = decoder(x, skip)
        return self.head(x), x

    def decode(self, features: Tensor, size: tuple[int, int], *,
               return_union: bool = False) -> Tensor:
        """``(B, C, H, W)`` image -> ``(B, K, H, W)`` logits (``size`` is the image's own)."""
        self.check_union(return_union)
        if tuple(features.shape[-2:]) != tuple(size):
            raise ValueError(f"a UNet decodes at its input size {tuple(features.shape[-2:])}, "
                             f"asked for {tuple(size)}")
        return self.forward_with_features(features)[0]
