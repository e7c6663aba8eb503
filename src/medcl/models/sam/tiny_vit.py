"""TinyViT image encoder (the LiteMedSAM / MobileSAM backbone), written for medcl.

Architecture (Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers",
ECCV 2022, as adapted by MobileSAM and LiteMedSAM):

* a patch embedding of two ``conv -> BatchNorm`` layers with a GELU between them;
* stage 0: MBConv blocks (1x1 expand, 3x3 depth-wise, 1x1 project, residual);
* stages 1..: TinyViT blocks: windowed multi-head self-attention with a learned bias per head and
  per relative offset inside the window, a 3x3 depth-wise ``conv -> BatchNorm`` and an MLP;
* every stage but the last ends with a patch merging (1x1 conv, 3x3 depth-wise conv with stride
  ``merge_strides[i]``, 1x1 conv) that changes the width to the next stage's;
* a neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to ``out_chans`` channels.

LiteMedSAM uses 1x1 patch-embedding convolutions with stride 1 and merge strides ``(2, 2, 1)``,
so a 256x256 image gives a 64x64 embedding (:attr:`TinyViT.stride` = 4).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from .common import LayerNorm2d, pad_to_multiple, window_partition, window_unpartition


class Conv2dBN(nn.Module):
    """``Conv2d`` without bias (``.c``) followed by ``BatchNorm2d`` (``.bn``).

    In eval mode the normalisation is folded into the convolution (one pass over the output
    instead of two; the same function up to rounding): ``scale = gamma / sqrt(var + eps)``
    multiplies the kernel per output channel, ``beta - mean * scale`` becomes its bias. The
    parameters and the state dict stay those of the two layers. ``(B, C_in, H, W) -> (B, C_out,
    H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                           groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.bn(self.c(x))
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.c.weight * scale[:, None, None, None]
        return nn.functional.conv2d(x, weight, self.bn.bias - self.bn.running_mean * scale,
                                    self.c.stride, self.c.padding, self.c.dilation, self.c.groups)


class PatchEmbed(nn.Module):
    """``conv -> BN -> GELU -> conv -> BN`` (``.seq``); each conv has stride ``s``."""

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(in_chans, dim // 2, kernel_size, stride), nn.GELU(),
                                 Conv2dBN(dim // 2, dim, kernel_size, stride))

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


def _gelu_(x: Tensor) -> Tensor:
    """Exact (erf) GELU in place, as ``nn.GELU()`` computes it; no autograd."""
    return torch.ops.aten.gelu_(x)


class MBConv(nn.Module):
    """Inverted residual block: ``(B, C, H, W) -> (B, C, H, W)``.

    :attr:`inplace` (default ``True``): without autograd, the activations and the residual sum
    overwrite their input maps instead of allocating new ones (the same values).
    """

    inplace: bool = True

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = Conv2dBN(channels, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = Conv2dBN(hidden, channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or not self.inplace:
            y = self.act(self.conv1(x))
            y = self.act(self.conv2(y))
            return self.act(x + self.conv3(y))
        # without autograd the activations and the residual sum work in place: at LiteMedSAM's
        # 256 x 256 stage-0 resolution every new hidden map is 64 MiB per slice to allocate
        y = _gelu_(self.conv1(x))
        y = _gelu_(self.conv2(y))
        y = self.conv3(y)
        y += x
        return _gelu_(y)


class PatchMerging(nn.Module):
    """``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)`` (rounded up)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(in_channels, out_channels)
        self.conv2 = Conv2dBN(out_channels, out_channels, 3, stride, groups=out_channels)
        self.conv3 = Conv2dBN(out_channels, out_channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window x window`` token windows.

    The logits get a learned bias ``attention_biases[head, offset]`` where ``offset`` indexes the
    absolute row and column distance ``(|dy|, |dx|)`` between the two tokens (``window**2``
    offsets). The input is layer-normalised first. ``(N, window**2, C) -> (N, window**2, C)``.

    :attr:`fused` (default ``True``): ``softmax(q k^T * scale + bias) v`` in one
    ``F.scaled_dot_product_attention`` call, the bias passed as the additive mask (no logits
    tensor kept); ``False`` spells it out in three steps, the same function up to rounding.
    """

    fused: bool = True

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        dy = (rows[:, None] - rows[None, :]).abs()
        dx = (cols[:, None] - cols[None, :]).abs()
        offsets = dy * window + dx  # (window**2, window**2) indices into the biases
        self.register_buffer("attention_bias_idxs", offsets, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n, length, self.num_heads, 3 * self.head_dim)
        # per head, the projection holds [q | k | v] (not [all q | all k | all v])
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, L, L)
        if self.fused:
            # a 4-D mask: with a 3-D one torch 2.13 falls back to its unfused math path on the
            # CPU (measured, docs/sam.md); the 4-D one reaches the flash kernel
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype)[None],
                                               scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale + bias
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(n, length, -1))


class TokenMLP(nn.Module):
    """``LayerNorm -> Linear -> GELU -> Linear`` on ``(..., C)`` tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention, depth-wise conv and MLP on a ``(B, H, W, C)`` token map.

    Maps not divisible by ``window`` are zero-padded at the bottom/right for the attention and
    cropped back afterwards.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, groups=dim)
        self.mlp = TokenMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        padded, ph, pw = pad_to_multiple(x, self.window)
        windows = self.attn(window_partition(padded, self.window))
        x = x + window_unpartition(windows, self.window, ph, pw)[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """MBConv blocks then an optional patch merging: ``(B, C, H, W) -> (B, C', H', W')``."""

    def __init__(self, dim: int, depth: int, expand_ratio: float,
                 downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    """TinyViT blocks then an optional patch merging: ``(B, C, H, W) -> (B, C', H', W')``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with a SAM neck.

    Args:
        in_chans: image channels.
        embed_dims: width of each stage (stage 0 is convolutional).
        depths: blocks per stage.
        num_heads: attention heads per stage (stage 0's value is unused).
        window_sizes: attention window per stage (stage 0's value is unused).
        mlp_ratio: MLP hidden width / stage width.
        mbconv_expand_ratio: MBConv hidden width / stage width.
        local_conv_size: kernel of the depth-wise conv between attention and MLP.
        merge_strides: stride of the patch merging after stage ``i`` (one per stage but the last).
        patch_kernel_size, patch_stride: kernel and stride of both patch-embedding convolutions.
        out_chans: channels of the output embedding.

    Shapes:
        input ``(B, in_chans, H, W)``; output ``(B, out_chans, ceil(H / stride), ceil(W / stride))``
        with :attr:`stride` ``= patch_stride**2 * prod(merge_strides)``.
    """

    def __init__(self, *, in_chans: int = 3, embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 merge_strides: Sequence[int] = (2, 2, 1), patch_kernel_size: int = 1,
                 patch_stride: int = 1, out_chans: int = 256) -> None:
        super().__init__()
        n = len(embed_dims)
        if not n >= 2 or not len(depths) == len(num_heads) == len(window_sizes) == n:
            raise ConfigError(
                f"embed_dims, depths, num_heads and window_sizes need the same length >= 2, got "
                f"{len(embed_dims)}, {len(depths)}, {len(num_heads)}, {len(window_sizes)}")
        if len(merge_strides) != n - 1:
            raise ConfigError(f"merge_strides needs {n - 1} values (one per stage but the last), "
                              f"got {tuple(merge_strides)}")
        for i in range(1, n):
            if embed_dims[i] % num_heads[i]:
                raise ConfigError(f"stage {i}: width {embed_dims[i]} is not divisible by "
                                  f"{num_heads[i]} heads")
        self.stride = patch_stride ** 2 * math.prod(merge_strides)
        self.out_chans = out_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_kernel_size, patch_stride)
        self.layers = nn.ModuleList()
        for i in range(n):
            merge = (PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i])
                     if i < n - 1 else None)
            if i == 0:
                self.layers.append(ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, merge))
            else:
                self.layers.append(AttentionStage(embed_dims[i], depths[i], num_heads[i],
                                                  window_sizes[i], mlp_ratio, local_conv_size,
                                                  merge))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
