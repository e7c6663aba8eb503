"""Plain ViT image encoder of the SAM / MedSAM ViT-B checkpoints, written for medcl.

Architecture (Kirillov et al., "Segment Anything", ICCV 2023; Li et al., "Exploring Plain Vision
Transformer Backbones for Object Detection", ECCV 2022):

* non-overlapping ``patch_size`` patches embedded by a strided convolution, plus a learned
  absolute position embedding ``(1, S/p, S/p, C)``;
* ``depth`` pre-norm transformer blocks; blocks listed in ``global_attn_indexes`` attend over the
  whole map, the others inside ``window_size`` windows (zero-padded at the bottom/right);
  attention logits get decomposed relative-position terms (one table per axis, ``rel_pos_h`` and
  ``rel_pos_w`` of shape ``(2 * size - 1, head_dim)``);
* a neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to ``out_chans`` channels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...errors import ConfigError
from .common import LayerNorm2d, pad_to_multiple, window_partition, window_unpartition


def relative_position_table(rel_pos: Tensor, q_size: int, k_size: int) -> Tensor:
    """Gather ``rel_pos`` ``(L, D)`` into ``(q_size, k_size, D)`` by relative offset.

    ``L`` must be ``2 * max(q_size, k_size) - 1``; a table of another length is linearly resized.
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.T[None], size=length, mode="linear")[0].T
    q = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    index = (q - k) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[index.long()]


class ViTAttention(nn.Module):
    """Multi-head self-attention with decomposed relative positions on ``(B, H, W, C)`` maps.

    Args:
        dim: token width ``C``.
        num_heads: attention heads.
        size: the ``(H, W)`` the relative-position tables are sized for (the window, or the
            whole map for global attention).
    """

    def __init__(self, dim: int, num_heads: int, size: tuple[int, int], qkv_bias: bool = True,
                 use_rel_pos: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * size[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = attn + self._relative_bias(q, h, w)
        x = attn.softmax(dim=-1) @ v
        x = x.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)

    def _relative_bias(self, q: Tensor, h: int, w: int) -> Tensor:
        """``(B*heads, h*w, h*w)`` bias: ``q . R_h[row_q - row_k] + q . R_w[col_q - col_k]``."""
        table_h = relative_position_table(self.rel_pos_h, h, h)
        table_w = relative_position_table(self.rel_pos_w, w, w)
        q = q.reshape(q.shape[0], h, w, -1)
        bias_h = torch.einsum("nhwc,hkc->nhwk", q, table_h)
        bias_w = torch.einsum("nhwc,wkc->nhwk", q, table_w)
        bias = bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]
        return bias.reshape(q.shape[0], h * w, h * w)


class ViTMLP(nn.Module):
    """``Linear -> GELU -> Linear`` (``lin1``, ``lin2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block on ``(B, H, W, C)``; ``window_size = 0``: global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 grid: tuple[int, int], qkv_bias: bool = True, use_rel_pos: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        size = (window_size, window_size) if window_size > 0 else grid
        self.attn = ViTAttention(dim, num_heads, size, qkv_bias, use_rel_pos)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            _, h, w, _ = y.shape
            y, ph, pw = pad_to_multiple(y, self.window_size)
            windows = window_partition(y, self.window_size)
            windows = windows.view(-1, self.window_size, self.window_size, y.shape[-1])
            windows = self.attn(windows).flatten(1, 2)
            y = window_unpartition(windows, self.window_size, ph, pw)[:, :h, :w]
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Strided convolution (``.proj``): ``(B, C, H, W) -> (B, H / p, W / p, D)``."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder.

    Args:
        img_size: input height and width ``S``.
        patch_size: patch size ``p`` (:attr:`stride`).
        in_chans: image channels.
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP ratio.
        out_chans: channels of the output embedding.
        window_size: attention window of the non-global blocks.
        global_attn_indexes: blocks that attend over the whole ``S/p x S/p`` map.
        qkv_bias, use_rel_pos: as in SAM (both true for the released checkpoints).

    Shapes:
        input ``(B, in_chans, S, S)``; output ``(B, out_chans, S/p, S/p)``.
    """

    def __init__(self, *, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, out_chans: int = 256, window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (2, 5, 8, 11), qkv_bias: bool = True,
                 use_rel_pos: bool = True) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        bad = [i for i in global_attn_indexes if not 0 <= i < depth]
        if bad:
            raise ConfigError(f"global_attn_indexes {bad} outside the {depth} blocks")
        self.img_size = img_size
        self.stride = patch_size
        self.out_chans = out_chans
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(embed_dim, num_heads, mlp_ratio,
                     0 if i in global_attn_indexes else window_size, (grid, grid), qkv_bias,
                     use_rel_pos)
            for i in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected a {self.img_size}x{self.img_size} image (the position "
                             f"embedding's size), got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
