"""``EmbeddingCache``: image embeddings of a frozen encoder, kept in memory so each distinct
encoder input is encoded once.

Two tiers, both keyed by a BLAKE2 digest of the prepared encoder input ``(3, S, S)`` and stored
on the CPU in ``dtype`` (bf16 by default: 2 MiB per LiteMedSAM slice, ``256 x 64 x 64``):

* **pinned** entries, written by :meth:`EmbeddingCache.pin` (the embeddings of every training
  and validation slice, computed up front by ``medcl.training.embeddings``); never evicted;
* **recent** entries, filled by :meth:`EmbeddingCache.lookup` on a miss; at most
  ``max_entries``, the oldest dropped first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor

from ...errors import ConfigError

Encode = Callable[[Tensor], Tensor]
#: how embeddings are stored (and, for a frozen encoder without a cache, rounded)
STORE_DTYPE = torch.bfloat16


class EmbeddingCache:
    """A map from prepared encoder inputs ``(3, S, S)`` to their embeddings ``(D, h, h)``.

    Args:
        max_entries: most *recent* (unpinned) entries kept; 0 keeps none.
        dtype: storage type of the embeddings.
    """

    def __init__(self, max_entries: int, dtype: torch.dtype = STORE_DTYPE) -> None:
        if max_entries < 0:
            raise ConfigError(f"embedding cache size must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self.dtype = dtype
        self.store: OrderedDict[bytes, Tensor] = OrderedDict()
        self.pinned: dict[bytes, Tensor] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(x: Tensor) -> bytes:
        data = x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16).digest()

    def __len__(self) -> int:
        return len(self.store) + len(self.pinned)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored embeddings (both tiers)."""
        return sum(t.numel() * t.element_size()
                   for tier in (self.store, self.pinned) for t in tier.values())

    def _get(self, key: bytes) -> Tensor | None:
        return self.pinned.get(key, self.store.get(key))

    def lookup(self, inputs: Tensor, encode: Encode) -> Tensor:
        """Embeddings ``(B, D, h, h)`` float32 of ``inputs (B, 3, S, S)``: stored ones reused,
        the others computed by ``encode`` in one batch and kept as recent entries."""
        keys = [self.key(x) for x in inputs]
        missing = [i for i, k in enumerate(keys) if self._get(k) is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = {}
        if missing:
            computed = encode(inputs[missing])
            for i, emb in zip(missing, computed):
                # the same (rounded) value whether it was a hit or a miss
                fresh[keys[i]] = emb.detach().to(self.dtype)
                if self.max_entries:
                    self.store[keys[i]] = fresh[keys[i]].to("cpu")
                    if len(self.store) > self.max_entries:
                        self.store.popitem(last=False)
        out = [fresh[k] if k in fresh else self._get(k) for k in keys]
        return torch.stack([o.to(inputs.device, torch.float32) for o in out])

    def pin(self, inputs: Tensor, encode: Encode) -> int:
        """Compute (in one batch) and keep for good the embeddings of those ``inputs
        (B, 3, S, S)`` not pinned yet; returns how many were computed."""
        keys = [self.key(x) for x in inputs]
        todo = {k: i for i, k in enumerate(keys) if k not in self.pinned}
        if todo:
            computed = encode(inputs[list(todo.values())])
            for k, emb in zip(todo, computed):
                self.pinned[k] = emb.detach().to("cpu", self.dtype)
                self.store.pop(k, None)
        return len(todo)
