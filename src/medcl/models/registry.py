"""Named model builders and :func:`build_model`."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .unet import UNet

UNET_WIDTHS = (16, 32, 64, 128, 256)
UNET_SMALL_WIDTHS = (8, 16, 32, 64, 128)
UNET_LARGE_WIDTHS = (32, 64, 128, 256, 512)


def unet(*, in_channels: int, num_classes: int, **kwargs: Any) -> UNet:
    """U-Net with widths 16..256 (about 2M parameters)."""
    kwargs.setdefault("widths", UNET_WIDTHS)
    return UNet(in_channels, num_classes, **kwargs)


def unet_small(*, in_channels: int, num_classes: int, **kwargs: Any) -> UNet:
    """U-Net with widths 8..128 (about 0.5M parameters)."""
    kwargs.setdefault("widths", UNET_SMALL_WIDTHS)
    return UNet(in_channels, num_classes, **kwargs)


def unet_large(*, in_channels: int, num_classes: int, **kwargs: Any) -> UNet:
    """U-Net with widths 32..512 (about 8M parameters)."""
    kwargs.setdefault("widths", UNET_LARGE_WIDTHS)
    return UNet(in_channels, num_classes, **kwargs)


MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet": unet,
    "unet_small": unet_small,
    "unet_large": unet_large,
}


def build_model(name: str, *, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override the builder's defaults.

    The model maps a ``(B, in_channels, H, W)`` image to ``(B, num_classes, H, W)`` logits.

    Raises:
        ConfigError: if ``name`` is not registered, or an option is invalid.
    """
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODEL_REGISTRY))}")
    try:
        return MODEL_REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as exc:  # an unknown keyword argument
        raise ConfigError(f"model {name!r}: {exc}") from None
