"""Builders of SAM-family models and :data:`SAM_REGISTRY`.

Every builder returns a :class:`SamModel`, randomly initialised, or loaded strictly from
``checkpoint`` by :func:`load_sam_checkpoint`. The builders differ only in sizes and share
:func:`_assemble`; derived sizes (embedding grid, mask size) are computed, not repeated.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from torch import nn

from ...errors import ConfigError
from .checkpoint import load_sam_checkpoint
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import SamModel
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer
from .vit import ImageEncoderViT

PROMPT_DIM = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SAM's pixel normalisation, in [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)


def _assemble(image_encoder: nn.Module, *, image_size: int, prompt_dim: int = PROMPT_DIM,
              num_heads: int = 8, mlp_dim: int = 2048, decoder_depth: int = 2,
              mask_in_chans: int = 16, checkpoint: str | os.PathLike | None = None,
              pixel_mean: Sequence[float] | None = None,
              pixel_std: Sequence[float] | None = None) -> SamModel:
    if image_size % image_encoder.stride:
        raise ConfigError(f"image_size {image_size} is not divisible by the encoder stride "
                          f"{image_encoder.stride}")
    grid = image_size // image_encoder.stride
    model = SamModel(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size),
                                     mask_in_chans=mask_in_chans),
        mask_decoder=MaskDecoder(
            transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=prompt_dim,
                                          num_heads=num_heads, mlp_dim=mlp_dim),
            transformer_dim=prompt_dim, num_multimask_outputs=3, iou_head_depth=3,
            iou_head_hidden_dim=prompt_dim),
        image_size=image_size, pixel_mean=pixel_mean, pixel_std=pixel_std,
    )
    if checkpoint is not None:
        load_sam_checkpoint(model, checkpoint)
    return model


def build_lite_medsam(checkpoint: str | os.PathLike | None = None) -> SamModel:
    """LiteMedSAM: TinyViT (64/128/160/320, depths 2/2/6/2) on 256x256 inputs.

    Image embedding ``(B, 256, 64, 64)``; mask logits ``(B, 1, 256, 256)``. Inputs in ``[0, 1]``
    without further normalisation. About 5.7 M encoder + 4.1 M prompt/decoder parameters.
    """
    return _assemble(TinyViT(), image_size=256, checkpoint=checkpoint)


def build_sam_vit_b(checkpoint: str | os.PathLike | None = None, *,
                    normalize: bool = False) -> SamModel:
    """SAM / MedSAM ViT-B on 1024x1024 inputs (image embedding 64x64, mask logits 256x256).

    ``normalize=True`` applies SAM's ImageNet pixel normalisation to the ``[0, 1]`` input (for
    the original SAM weights); MedSAM's weights expect the ``[0, 1]`` image as is (the default).
    """
    return _assemble(ImageEncoderViT(), image_size=1024, checkpoint=checkpoint,
                     pixel_mean=IMAGENET_MEAN if normalize else None,
                     pixel_std=IMAGENET_STD if normalize else None)


def build_sam_tiny(checkpoint: str | os.PathLike | None = None, *,
                   encoder: str = "tiny_vit") -> SamModel:
    """A few-thousand-parameter model of the same structure, for tests.

    ``encoder="tiny_vit"``: 64x64 input, embedding 16x16, masks 64x64;
    ``encoder="vit"``: 32x32 input, patch 8, embedding 4x4, masks 16x16. Prompt width 32.
    """
    if encoder == "tiny_vit":
        image_encoder: nn.Module = TinyViT(embed_dims=(8, 16, 24, 32), depths=(1, 1, 2, 1),
                                           num_heads=(1, 2, 2, 4), window_sizes=(7, 7, 5, 3),
                                           out_chans=32)
        image_size = 64
    elif encoder == "vit":
        image_encoder = ImageEncoderViT(img_size=32, patch_size=8, embed_dim=16, depth=2,
                                        num_heads=2, out_chans=32, window_size=3,
                                        global_attn_indexes=(1,))
        image_size = 32
    else:
        raise ConfigError(f"unknown encoder {encoder!r}; valid: tiny_vit, vit")
    return _assemble(image_encoder, image_size=image_size, prompt_dim=32, num_heads=2,
                     mlp_dim=64, checkpoint=checkpoint)


SAM_REGISTRY: dict[str, Callable[..., SamModel]] = {
    "lite_medsam": build_lite_medsam,
    "sam_vit_b": build_sam_vit_b,
    "sam_tiny": build_sam_tiny,
}


def build_sam(name: str, checkpoint: str | os.PathLike | None = None, **kwargs: Any) -> SamModel:
    """Build the registered SAM-family model ``name`` (optionally loading ``checkpoint``).

    Raises:
        ConfigError: unknown name or option, or a checkpoint that does not match.
    """
    if name not in SAM_REGISTRY:
        raise ConfigError(f"unknown SAM model {name!r}; valid: {', '.join(sorted(SAM_REGISTRY))}")
    try:
        return SAM_REGISTRY[name](checkpoint, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"SAM model {name!r}: {exc}") from None
