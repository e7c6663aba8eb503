"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Each block (Kirillov et al., 2023, section 3 and appendix A) runs, with a residual connection and
a LayerNorm after every step:

1. self-attention of the tokens (the first block skips the residual and the query positional
   encoding);
2. cross-attention tokens -> image;
3. an MLP on the tokens;
4. cross-attention image -> tokens.

After the blocks, one more tokens -> image attention. Positional encodings are added to queries
and keys (never to values) at every attention. Cross-attentions project to ``C / downsample``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ...errors import ConfigError


class Attention(nn.Module):
    """Multi-head attention with separate ``q/k/v/out`` projections through ``C / downsample``.

    ``q (B, Nq, C), k (B, Nk, C), v (B, Nk, C) -> (B, Nq, C)``; ``mask`` (bool, broadcastable
    to ``(Nq, Nk)``, True where a query may attend to a key) restricts the attention.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ConfigError(f"internal width {self.internal_dim} is not divisible by "
                             f"{num_heads} heads")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = (self._heads(self.q_proj(q)), self._heads(self.k_proj(k)),
                   self._heads(self.v_proj(v)))
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if mask is not None:
            attn = attn.masked_fill(~mask, float("-inf"))
        out = attn.softmax(dim=-1) @ v
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))


class MLPBlock(nn.Module):
    """``Linear -> ReLU -> Linear`` (``lin1``, ``lin2``)."""

    def __init__(self, embedding_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """One block of :class:`TwoWayTransformer` (see the module docstring).

    ``token_mask`` ``(Nt, Nt)`` restricts the tokens' self-attention and ``image_mask`` ``(Nt,)``
    the tokens the image attends to (True: allowed; None: all).
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads,
                                                   attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor, *,
                token_mask: Tensor | None = None,
                image_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_mask)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, image_mask))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Two-way transformer decoder.

    Args:
        depth: number of :class:`TwoWayAttentionBlock`.
        embedding_dim: token and image width ``C``.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLP.
        attention_downsample_rate: cross-attentions work in ``C / rate`` channels.

    ``forward(image_embedding (B, C, h, w), image_pe (B, C, h, w), tokens (B, N, C))`` returns
    ``(tokens (B, N, C), image tokens (B, h * w, C))``; ``token_mask (N, N)`` and
    ``image_mask (N,)`` (see :class:`TwoWayAttentionBlock`) let several prompts share one pass.
    """

    def __init__(self, *, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8,
                 mlp_dim: int = 2048, attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate,
                                 skip_first_layer_pe=i == 0)
            for i in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, tokens: Tensor, *,
                token_mask: Tensor | None = None,
                image_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe, token_mask=token_mask,
                                  image_mask=image_mask)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
