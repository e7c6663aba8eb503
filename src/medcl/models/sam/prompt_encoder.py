"""SAM prompt encoder: points, boxes and masks -> sparse and dense prompt embeddings.

Coordinates are encoded with random Fourier features (Tancik et al., NeurIPS 2020): a point
``(x, y)`` scaled to ``[0, 1]`` by the input image size, mapped to ``[-1, 1]``, multiplied by a
fixed Gaussian matrix ``G (2, C/2)`` and passed through ``sin`` and ``cos``. A learned embedding
per prompt type is added (positive point, negative point, box top-left corner, box bottom-right
corner, padding point). A mask prompt is downscaled 4x by convolutions; without one, a learned
"no mask" vector fills the dense map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .common import LayerNorm2d

# indices into ``point_embeddings``; a point's label is its index (0 negative, 1 positive)
NEGATIVE, POSITIVE, TOP_LEFT, BOTTOM_RIGHT = range(4)
PAD_LABEL = -1


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier positional encoding of normalised ``(x, y)`` coordinates."""

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix",
                             scale * torch.randn(2, num_pos_feats))

    def encode(self, coords: Tensor) -> Tensor:
        """``(..., 2)`` coordinates in ``[0, 1]`` -> ``(..., 2 * num_pos_feats)``."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([coords.sin(), coords.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> Tensor:
        """Encoding of the centre of every cell of an ``(h, w)`` grid: ``(C, h, w)``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``(B, N, 2)`` pixel coordinates ``(x, y)`` in an ``(H, W)`` image -> ``(B, N, C)``."""
        scale = coords.new_tensor([image_size[1], image_size[0]])
        return self.encode(coords.float() / scale)


class PromptEncoder(nn.Module):
    """Encodes SAM prompts.

    Args:
        embed_dim: prompt embedding width ``C`` (256 in SAM).
        image_embedding_size: ``(h, w)`` of the image embedding.
        input_image_size: ``(H, W)`` of the (padded) encoder input; prompt coordinates are in
            these pixels.
        mask_in_chans: hidden channels of the mask downscaling.

    Mask prompts are ``(B, 1, 4h, 4w)`` logits.
    """

    def __init__(self, *, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (1024, 1024), mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image embedding grid: ``(1, C, h, w)``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """``points (B, N, 2)`` pixels ``(x, y)``, ``labels (B, N)`` (1 positive, 0 negative,
        -1 padding) -> ``(B, N (+1 if pad), C)``."""
        points = points.float() + 0.5  # the centre of the pixel
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), PAD_LABEL)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == PAD_LABEL, self.not_a_point_embed.weight, emb)
        emb = emb + (labels == NEGATIVE) * self.point_embeddings[NEGATIVE].weight
        return emb + (labels == POSITIVE) * self.point_embeddings[POSITIVE].weight

    def embed_boxes(self, boxes: Tensor) -> Tensor:
        """``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels -> ``(B, 2, C)`` corner embeddings."""
        corners = (boxes.float() + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_types = torch.cat([self.point_embeddings[TOP_LEFT].weight,
                                  self.point_embeddings[BOTTOM_RIGHT].weight])
        return emb + corner_types

    def forward(self, *, points: tuple[Tensor, Tensor] | None = None, boxes: Tensor | None = None,
                masks: Tensor | None = None, batch_size: int | None = None
                ) -> tuple[Tensor, Tensor]:
        """Embed the given prompts.

        Args:
            points: ``(coords (B, N, 2), labels (B, N))`` or None.
            boxes: ``(B, 4)`` (or ``(B, 1, 4)``) or None.
            masks: ``(B, 1, 4h, 4w)`` mask logits or None.
            batch_size: ``B`` when no prompt is given.

        Returns:
            ``sparse (B, N_points + 2 * has_box, C)`` and ``dense (B, C, h, w)`` embeddings.
        """
        bs = _batch_size(points, boxes, masks, batch_size)
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty(bs, 0, self.embed_dim, device=device)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes.reshape(-1, 4)))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense


def _batch_size(points, boxes, masks, batch_size) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.reshape(-1, 4).shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1 if batch_size is None else batch_size
