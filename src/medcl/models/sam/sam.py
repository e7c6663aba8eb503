"""``SamModel``: image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class SamModel(nn.Module):
    """A Segment-Anything-style promptable segmenter.

    Args:
        image_encoder: maps ``(B, 3, S, S)`` to ``(B, C, S / stride, S / stride)``; must expose
            an integer ``stride`` attribute (16 for ViT-B, 4 for LiteMedSAM's TinyViT).
        prompt_encoder: its ``input_image_size`` must be ``(S, S)`` and its
            ``image_embedding_size`` ``(S / stride, S / stride)``.
        mask_decoder: the SAM mask decoder.
        image_size: the encoder's input size ``S``.
        pixel_mean, pixel_std: per-channel normalisation applied to the ``[0, 1]`` input
            (``None``: none, as LiteMedSAM and MedSAM expect). Non-persistent buffers.

    Shapes (``h = S / stride``):
        * :meth:`encode_images`: ``images (B, 3, S, S)`` in ``[0, 1]`` ->
          ``image_embeddings (B, C, h, h)``;
        * :meth:`predict_masks`: embeddings + prompts -> ``mask logits (B, M, 4h, 4h)`` and
          ``iou_predictions (B, M)``; the logits are at ``S / 4`` for ViT-B and at the full
          ``S`` for LiteMedSAM (threshold at 0 for a mask; they are **not** probabilities);
        * :meth:`predict_mask_groups`: embeddings + ``G`` prompts each -> ``(B, G, 4h, 4h)``
          logits from one decoder pass per image;
        * :meth:`forward`: both in one call.
    """

    def __init__(self, *, image_encoder: nn.Module, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder, image_size: int,
                 pixel_mean: Sequence[float] | None = None,
                 pixel_std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size
        self.normalize = pixel_mean is not None
        mean = torch.tensor(pixel_mean if self.normalize else (0.0, 0.0, 0.0))
        std = torch.tensor(pixel_std if pixel_std is not None else (1.0, 1.0, 1.0))
        self.register_buffer("pixel_mean", mean.view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(-1, 1, 1), persistent=False)

    @property
    def embedding_size(self) -> int:
        """Side ``h`` of the image embedding."""
        return self.prompt_encoder.image_embedding_size[0]

    @property
    def mask_size(self) -> int:
        """Side of the predicted mask logits (``4 h``)."""
        return 4 * self.embedding_size

    def encode_images(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` images in ``[0, 1]`` -> ``(B, C, h, h)`` image embeddings."""
        s = self.image_size
        if images.dim() != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(f"expected images (B, 3, {s}, {s}) in [0, 1], got "
                             f"{tuple(images.shape)}; resize the longest side to {s} and pad")
        if self.normalize:
            images = (images - self.pixel_mean) / self.pixel_std
        return self.image_encoder(images)

    def predict_masks(self, image_embeddings: Tensor, boxes: Tensor | None = None, *,
                      points: tuple[Tensor, Tensor] | None = None,
                      mask_prompts: Tensor | None = None,
                      sparse_embeddings: Tensor | None = None,
                      dense_embeddings: Tensor | None = None,
                      multimask_output: bool = False) -> tuple[Tensor, Tensor]:
        """Decode masks for prompts on already-encoded images.

        Args:
            image_embeddings: ``(B, C, h, h)``, or ``(1, C, h, h)`` shared by ``B`` prompts.
            boxes: ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in input pixels (``[0, S)``) or None.
            points: ``(coords (B, N, 2) as (x, y), labels (B, N))``: 1 positive, 0 negative.
            mask_prompts: ``(B, 1, 4h, 4h)`` mask logits (a previous prediction) or None.
            sparse_embeddings: extra ``(B, K, C)`` prompt tokens (e.g. learned class prompts),
                appended after the point and box tokens.
            dense_embeddings: ``(B, C, h, h)``; replaces the mask / "no mask" embedding.
            multimask_output: return SAM's 3 candidate masks instead of one.

        Returns:
            ``(mask logits (B, M, 4h, 4h), iou_predictions (B, M))`` with ``M`` 1 or 3.
        """
        batch = _prompt_batch(image_embeddings, boxes, points, sparse_embeddings, dense_embeddings)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_prompts,
                                            batch_size=batch)
        if sparse_embeddings is not None:
            sparse = torch.cat([sparse.expand(sparse_embeddings.shape[0], -1, -1),
                                sparse_embeddings.to(sparse.dtype)], dim=1)
        if dense_embeddings is not None:
            dense = dense_embeddings
        return self.mask_decoder(image_embeddings=image_embeddings,
                                 image_pe=self.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse,
                                 dense_prompt_embeddings=dense,
                                 multimask_output=multimask_output)

    def predict_mask_groups(self, image_embeddings: Tensor, prompt_groups: Tensor, *,
                            passive_groups: int = 0) -> Tensor:
        """All ``G`` prompts of each image decoded in one pass
        (:meth:`MaskDecoder.forward_groups`), without a mask prompt.

        ``image_embeddings (B, C, h, h)`` and ``prompt_groups (B or 1, G, N, C)`` sparse prompt
        embeddings (box corners, learned tokens) -> mask **logits** ``(B, G, 4h, 4h)``.
        """
        b = image_embeddings.shape[0]
        _, dense = self.prompt_encoder(batch_size=1)
        return self.mask_decoder.forward_groups(
            image_embeddings=image_embeddings, image_pe=self.prompt_encoder.get_dense_pe(),
            prompt_groups=prompt_groups.expand(b, -1, -1, -1), dense_prompt_embeddings=dense,
            passive_groups=passive_groups)

    def forward(self, images: Tensor, boxes: Tensor | None = None,
                **prompts) -> tuple[Tensor, Tensor]:
        """``images (B, 3, S, S)`` in ``[0, 1]`` + prompts -> ``(mask logits, iou_predictions)``.

        Keyword arguments are those of :meth:`predict_masks`.
        """
        return self.predict_masks(self.encode_images(images), boxes, **prompts)


def _prompt_batch(image_embeddings, boxes, points, sparse, dense) -> int:
    """Number of prompts: the first prompt given, else the number of images."""
    for t in (boxes.reshape(-1, 4) if boxes is not None else None,
              points[0] if points is not None else None, sparse, dense):
        if t is not None:
            return t.shape[0]
    return image_embeddings.shape[0]
