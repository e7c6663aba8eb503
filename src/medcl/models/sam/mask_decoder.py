"""SAM mask decoder: image embedding + prompt tokens -> mask logits and IoU predictions.

Learned output tokens (one IoU token and ``num_multimask_outputs + 1`` mask tokens) are
prepended to the prompt tokens and run through the :class:`TwoWayTransformer` together with the
image embedding (plus the dense prompt embedding). The image tokens are upscaled 4x by two
transposed convolutions; each mask token is mapped by its own 3-layer MLP to a vector that is
dot-multiplied with every upscaled pixel, giving one mask's logits. A 3-layer MLP on the IoU
token predicts each mask's IoU. Mask 0 is the single-mask output; masks 1.. the multi-mask ones.

:meth:`MaskDecoder.forward_groups` decodes ``G`` prompts of one image in ONE pass: each prompt
brings its own copy of the output tokens (its *group*: IoU token, mask tokens, prompt tokens, the
sequence :meth:`MaskDecoder.forward` would see), the groups are concatenated into one token
sequence, and the tokens' self-attention is masked block-diagonally, so a group's tokens never
attend to another group's. The groups share the image tokens: the image -> token attention reads
every *active* group (one softmax over their tokens), so prompts interact only through the
image; *passive* groups (the last ``passive_groups``) read the image but are never read by it,
so adding or dropping them leaves the other groups' masks unchanged. The upscaling of the image
tokens is done once; each group's single-mask token gives its mask. With ``G = 1`` this is
exactly :meth:`MaskDecoder.forward`'s single mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts masks from an image embedding and prompt embeddings.

    Args:
        transformer: the two-way transformer (its width must be ``transformer_dim``).
        transformer_dim: width ``C`` of the image embedding and of the tokens.
        num_multimask_outputs: masks predicted for ambiguous prompts (3 in SAM).
        iou_head_depth, iou_head_hidden_dim: the IoU prediction MLP.
    """

    def __init__(self, *, transformer: TwoWayTransformer, transformer_dim: int = 256,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens,
                                       iou_head_depth)

    def forward(self, *, image_embeddings: Tensor, image_pe: Tensor,
                sparse_prompt_embeddings: Tensor, dense_prompt_embeddings: Tensor,
                multimask_output: bool = False) -> tuple[Tensor, Tensor]:
        """Predict masks.

        Args:
            image_embeddings: ``(B, C, h, w)``, or ``(1, C, h, w)`` shared by all ``B`` prompts.
            image_pe: ``(1, C, h, w)`` positional encoding of the embedding grid.
            sparse_prompt_embeddings: ``(B, N, C)`` (``N`` may be 0).
            dense_prompt_embeddings: ``(B, C, h, w)``.
            multimask_output: return the 3 multi-mask outputs instead of the single mask.

        Returns:
            ``masks (B, M, 4h, 4w)`` **logits** (foreground where > 0) and
            ``iou_predictions (B, M)``, with ``M = 1``, or 3 when ``multimask_output``.
        """
        b = sparse_prompt_embeddings.shape[0]
        tokens = torch.cat([self._output_tokens(b), sparse_prompt_embeddings], dim=1)
        hs, image_tokens = self._transform(image_embeddings, image_pe, dense_prompt_embeddings,
                                           tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens]
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i])
                                for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = self._masks(hyper_in, image_tokens, image_embeddings.shape[-2:])
        iou_pred = self.iou_prediction_head(iou_token_out)

        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def forward_groups(self, *, image_embeddings: Tensor, image_pe: Tensor, prompt_groups: Tensor,
                       dense_prompt_embeddings: Tensor, passive_groups: int = 0) -> Tensor:
        """Single-mask logits of ``G`` prompts per image from one pass (see the module docstring).

        Args:
            image_embeddings: ``(B, C, h, w)``, or ``(1, C, h, w)`` shared by all ``B``.
            image_pe: ``(1, C, h, w)``.
            prompt_groups: ``(B, G, N, C)`` sparse prompt embeddings, ``N`` tokens per prompt.
            dense_prompt_embeddings: ``(B, C, h, w)`` or ``(1, C, h, w)``.
            passive_groups: the last groups that read the image but are not read by it
                (``< G``).

        Returns:
            ``masks (B, G, 4h, 4w)`` **logits**, mask ``g`` answering prompt ``g``.
        """
        b, g, n, c = prompt_groups.shape
        if not 0 <= passive_groups < g:
            raise ValueError(f"passive_groups must be in [0, {g}), got {passive_groups}")
        out = self._output_tokens(b * g).view(b, g, -1, c)
        group_len = out.shape[2] + n
        tokens = torch.cat([out, prompt_groups.to(out.dtype)], dim=2).view(b, g * group_len, c)
        group = torch.arange(g, device=tokens.device).repeat_interleave(group_len)
        token_mask = group[:, None] == group[None, :]
        image_mask = group < g - passive_groups
        hs, image_tokens = self._transform(image_embeddings, image_pe, dense_prompt_embeddings,
                                           tokens, token_mask=token_mask, image_mask=image_mask)
        single = hs.view(b, g, group_len, c)[:, :, 1]  # each group's single-mask token
        hyper_in = self.output_hypernetworks_mlps[0](single)
        return self._masks(hyper_in, image_tokens, image_embeddings.shape[-2:])

    def _output_tokens(self, b: int) -> Tensor:
        """The IoU token and the mask tokens, ``(b, 1 + num_mask_tokens, C)``."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        return output_tokens.expand(b, -1, -1)

    def _transform(self, image_embeddings: Tensor, image_pe: Tensor, dense: Tensor,
                   tokens: Tensor, **masks) -> tuple[Tensor, Tensor]:
        b = tokens.shape[0]
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(f"image_embeddings has batch {image_embeddings.shape[0]} but the "
                             f"prompts have {b}; give one image per prompt or a single image")
        src = image_embeddings.expand(b, -1, -1, -1) + dense
        return self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens, **masks)

    def _masks(self, hyper_in: Tensor, image_tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """``hyper_in (B, M, C/8)`` times the upscaled ``image_tokens (B, h * w, C)`` ->
        ``(B, M, 4h, 4w)`` mask logits."""
        b, _, c = image_tokens.shape
        upscaled = self.output_upscaling(image_tokens.transpose(1, 2).reshape(b, c, *grid))
        _, cu, hu, wu = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
