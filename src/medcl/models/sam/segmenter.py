"""``SamSegmenter``: a SAM-family model as a fully automatic multi-class segmenter.

No prompt is needed at test time: each foreground class ``c = 1..K-1`` owns a learned prompt
(``num_prompt_tokens`` sparse tokens fed to the mask decoder where a box's two corner tokens
would go), and one more learned prompt asks for the **union** of the foreground classes (the
"multi-class prompt"). The class mask logits ``m_c`` become the segmentation logits
``[0, m_1, ..., m_{K-1}]`` (background logit fixed at 0), so ``softmax`` gives class
probabilities and the argmax picks the strongest class among those whose mask logit is above 0,
SAM's threshold.

Decoding (``decode_mode``): ``"joint"`` decodes all prompts of an image in ONE decoder pass
(:meth:`~.mask_decoder.MaskDecoder.forward_groups`: one token group per prompt, token
self-attention masked block-diagonally, the union prompt's group passive, so class masks do not
depend on whether the union is decoded); ``"per_prompt"`` runs the decoder once per (image,
prompt), as SAM does for separate prompts. The union is decoded only when asked for
(``return_union``), for all inputs or for the first ``n``.

The segmenter takes the same input as every other model of the package, ``(B, C, H, W)`` slices
(z-scored, any size), and prepares them as LiteMedSAM expects: per slice min-max to ``[0, 1]``,
repeat to 3 channels, resize the longest side to the encoder's input size ``S``, pad
bottom/right; mask logits are cropped and resized back to ``(H, W)``.

Image encoder modes (``encoder``):

* ``"frozen"``: the encoder never trains and is in eval mode from construction on (its
  BatchNorm layers keep the pretrained running statistics: precomputing or training never
  moves them); its embeddings are rounded to the store's dtype (bf16) and made contiguous
  whether cached or not, so training, validation and prediction see the same values in the
  same layout (a bf16 decoder rounds a channels-last copy differently); they are cached in
  memory (:class:`~.embedding_store.EmbeddingCache`), keyed by the content of the prepared
  input, so a slice seen again (no augmentation, a centre crop) is encoded once;
  :meth:`SamSegmenter.precompute` fills the cache up front. This is what makes SAM training
  practical on a CPU.
* ``"partial"``: the last encoder stage and the neck train, the rest is frozen; no cache.
* ``"full"``: everything trains; no cache.

``forward`` has three stages so that training objectives can mix in embedding space (what a
frozen, cached encoder requires): ``stage="encode"`` returns the image embeddings
``(B, D, h, h)``, ``stage="decode"`` maps embeddings to logits (``size=(H, W)`` gives the output
size), ``stage="full"`` (default) does both.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...errors import ConfigError
from ..segmenter import Segmenter
from .embedding_store import STORE_DTYPE, EmbeddingCache
from .sam import SamModel

log = logging.getLogger(__name__)

ENCODER_MODES = ("frozen", "partial", "full")
DECODE_MODES = ("joint", "per_prompt")
#: inputs per recomputed decoder call (``recompute=True``): bounds the backward pass's
#: transient activations (about 70 MiB per LiteMedSAM input in the joint mode)
RECOMPUTE_CHUNK = 4
#: slices per image-encoder call, in training's precompute and at inference alike: LiteMedSAM's
#: TinyViT keeps its first stages at high resolution, and one call on 16 slices took the process
#: past 4 GiB; 4 at a time keeps the peak low at the same speed per slice
ENCODE_CHUNK = 4
RESIZE_MODES = ("shrink", "longest")
#: box the class prompts start from: the central half of the image, in units of ``S``.
INIT_BOX = (0.25, 0.25, 0.75, 0.75)


class SamSegmenter(Segmenter):
    """Automatic ``K``-class segmentation with a SAM-family model and learned prompts.

    Args:
        sam: the promptable model (pretrained weights already loaded).
        in_channels: input channels, 1 (repeated to RGB) or 3.
        num_classes: ``K`` including background.
        encoder: ``"frozen"``, ``"partial"`` or ``"full"`` (see the module docstring).
        num_prompt_tokens: learned tokens per prompt.
        union_prompt: also learn the foreground-union prompt (needed by the prompt-level
            anatomy consistency loss).
        cache_size: most embeddings kept by the frozen encoder's cache on the fly, on top of
            the precomputed (pinned) ones (0: no cache at all, nothing precomputed).
        decode_mode: ``"joint"`` (all prompts of an image in one decoder pass) or
            ``"per_prompt"`` (one pass per prompt). The default is ``"per_prompt"`` so that
            checkpoints written before the option existed load as they were trained; training
            runs record ``--sam-decode`` (default ``joint``).
        recompute: in training, keep no decoder activations for the backward pass but
            recompute them (``torch.utils.checkpoint``, ``RECOMPUTE_CHUNK`` inputs at a time):
            less memory for one more decoder forward pass per step.
        resize: ``"longest"`` scales every slice so its longest side is ``S`` (LiteMedSAM's
            rule); ``"shrink"`` (default) only scales down slices larger than ``S`` and pads the
            others, so slices resampled to a fixed spacing keep that spacing (training crops and
            whole slices at inference then see the anatomy at the same size).

    Shapes:
        ``forward(x (B, C, H, W))`` -> logits ``(B, K, H, W)`` (not probabilities); with
        ``return_union=True`` also the union mask logits ``(B, 1, H, W)`` (``return_union=n``:
        ``(n, 1, H, W)``, of the first ``n`` inputs).
    """

    size_divisor = 1

    def __init__(self, sam: SamModel, *, in_channels: int, num_classes: int,
                 encoder: str = "frozen", num_prompt_tokens: int = 2, union_prompt: bool = True,
                 cache_size: int = 2048, resize: str = "shrink",
                 decode_mode: str = "per_prompt", recompute: bool = False) -> None:
        super().__init__()
        self.recompute = recompute
        if decode_mode not in DECODE_MODES:
            raise ConfigError(f"unknown decode mode {decode_mode!r}; valid: "
                              f"{', '.join(DECODE_MODES)}")
        self.decode_mode = decode_mode
        if resize not in RESIZE_MODES:
            raise ConfigError(f"unknown resize mode {resize!r}; valid: {', '.join(RESIZE_MODES)}")
        self.resize = resize
        if encoder not in ENCODER_MODES:
            raise ConfigError(f"unknown encoder mode {encoder!r}; "
                              f"valid: {', '.join(ENCODER_MODES)}")
        if in_channels not in (1, 3):
            raise ConfigError(f"SAM backbones take 1 or 3 input channels, got {in_channels}")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        if num_prompt_tokens < 1:
            raise ConfigError(f"num_prompt_tokens must be >= 1, got {num_prompt_tokens}")
        self.sam = sam
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder_mode = encoder
        self.union_prompt = union_prompt
        self.has_union = union_prompt
        n_prompts = num_classes - 1 + int(union_prompt)
        self.prompts = nn.Parameter(self._initial_prompts(n_prompts, num_prompt_tokens))
        self.cache = (EmbeddingCache(cache_size) if encoder == "frozen" and cache_size else None)
        self._set_trainable()
        self.train()  # a frozen encoder is in eval mode before anything encodes a slice

    @property
    def image_size(self) -> int:
        return self.sam.image_size

    @property
    def fixed_input_size(self) -> int:
        return self.image_size

    @property
    def embedding_dim(self) -> int:
        return self.prompts.shape[-1]

    @torch.no_grad()
    def _initial_prompts(self, n_prompts: int, n_tokens: int) -> Tensor:
        """Each prompt starts as the box prompt of the image's central half (plus small noise to
        tell the classes apart): a pretrained decoder then already outputs a plausible mask."""
        s = self.sam.image_size
        box = torch.tensor([INIT_BOX]) * s
        sparse, _ = self.sam.prompt_encoder(points=None, boxes=box, masks=None, batch_size=1)
        tokens = sparse[0]
        reps = -(-n_tokens // tokens.shape[0])
        base = tokens.repeat(reps, 1)[:n_tokens]
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(n_prompts, n_tokens, base.shape[-1], generator=gen)
        return base.unsqueeze(0) + 0.02 * noise * base.std()

    def _set_trainable(self) -> None:
        # the learned prompts replace the prompt encoder's point/box/mask embeddings: frozen
        for p in self.sam.prompt_encoder.parameters():
            p.requires_grad_(False)
        enc = self.sam.image_encoder
        for p in enc.parameters():
            p.requires_grad_(self.encoder_mode == "full")
        if self.encoder_mode == "partial":
            stages = getattr(enc, "layers", None) or getattr(enc, "blocks")
            for module in (stages[-1], enc.neck):
                for p in module.parameters():
                    p.requires_grad_(True)

    def train(self, mode: bool = True) -> "SamSegmenter":
        super().train(mode)
        if self.encoder_mode == "frozen":  # no batch statistics or dropout drift
            self.sam.image_encoder.eval()
        return self

    # -- input preparation ----------------------------------------------------------------------
    def prepare(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``(B, C, H, W)`` -> ``(B, 3, S, S)`` in ``[0, 1]`` and the resized size ``(h, w)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = x.float()
        flat = x.flatten(1)
        low = flat.min(1).values.view(-1, 1, 1, 1)
        high = flat.max(1).values.view(-1, 1, 1, 1)
        x = (x - low) / (high - low).clamp(min=1e-8)
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        height, width = x.shape[-2:]
        h, w = self._resized(height, width)
        if (h, w) != (height, width):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                              antialias=h < height)
        s = self.image_size
        return F.pad(x, (0, s - w, 0, s - h)), (h, w)

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        scale = self.image_size / max(height, width)
        if self.resize == "shrink":
            scale = min(scale, 1.0)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def encode(self, x: Tensor) -> Tensor:
        """Image embeddings ``(B, D, h, h)`` of ``(B, C, H, W)`` slices (cached when frozen)."""
        prepared, _ = self.prepare(x)
        if self.cache is not None:
            with torch.no_grad():
                return self.cache.lookup(prepared, self._encode_prepared)
        if self.encoder_mode == "frozen":
            # the values the cache would have returned, in its (contiguous) layout: a bf16
            # decoder rounds a channels-last copy of the same values differently
            with torch.no_grad():
                return self._encode_prepared(prepared).to(STORE_DTYPE).float().contiguous()
        return self._encode_prepared(prepared)

    def _encode_prepared(self, prepared: Tensor) -> Tensor:
        """Embeddings ``(B, D, h, h)`` of prepared inputs ``(B, 3, S, S)``: ``ENCODE_CHUNK`` at
        a time in eval mode (the same values as one call), in one call while the encoder trains
        (its BatchNorm then normalises with the statistics of the whole batch)."""
        if self.sam.image_encoder.training:
            return self.sam.encode_images(prepared)
        return torch.cat([self.sam.encode_images(chunk)
                          for chunk in prepared.split(ENCODE_CHUNK)])

    @property
    def can_precompute(self) -> bool:
        return self.cache is not None

    @property
    def precomputed_bytes(self) -> int:
        return self.cache.nbytes if self.cache is not None else 0

    @torch.no_grad()
    def precompute(self, x: Tensor) -> int:
        """Encode ``(B, C, H, W)`` slices now and keep their embeddings for good (frozen
        encoder only); returns how many were computed (already stored ones are skipped)."""
        if self.cache is None:
            return 0
        prepared, _ = self.prepare(x)
        return self.cache.pin(prepared, self._encode_prepared)

    def decode(self, embeddings: Tensor, size: tuple[int, int], *,
               return_union: bool | int = False) -> Tensor | tuple[Tensor, Tensor]:
        """Class logits ``(B, K, H, W)`` at ``size = (H, W)`` from embeddings ``(B, D, h, h)``,
        and the union logits of all (``True``) or of the first ``n`` (``return_union=n``)
        inputs."""
        self.check_union(return_union)
        b = embeddings.shape[0]
        rows = b if return_union is True else min(int(return_union), b)
        n_fg = self.num_classes - 1
        classes = self.prompts[:n_fg]
        union = None
        if rows and self.decode_mode == "joint":
            # the union group is passive: the class masks are the same with or without it
            with_union = self._decode_masks(embeddings[:rows], self.prompts, passive=1)
            masks, union = with_union[:, :n_fg], with_union[:, n_fg:]
            if rows < b:
                masks = torch.cat([masks, self._decode_masks(embeddings[rows:], classes)])
        else:
            masks = self._decode_masks(embeddings, classes)
            if rows:
                union = self._decode_masks(embeddings[:rows], self.prompts[n_fg:])
        masks = self._to_size(masks, size)
        logits = torch.cat([masks.new_zeros(b, 1, *size), masks], dim=1)
        if union is None:
            return logits
        return logits, self._to_size(union, size)

    def _decode_masks(self, embeddings: Tensor, prompts: Tensor, passive: int = 0) -> Tensor:
        """Mask logits ``(B, P, m, m)`` of ``prompts (P, N, D)`` on ``embeddings (B, D, h, h)``;
        with ``recompute`` (in training), ``RECOMPUTE_CHUNK`` inputs at a time whose decoder
        activations are recomputed in the backward pass instead of kept."""
        if not (self.recompute and self.training and torch.is_grad_enabled()):
            return self._run_decoder(embeddings, prompts, passive)
        return torch.cat([checkpoint(self._run_decoder, chunk, prompts, passive,
                                     use_reentrant=False)
                          for chunk in embeddings.split(RECOMPUTE_CHUNK)])

    def _run_decoder(self, embeddings: Tensor, prompts: Tensor, passive: int) -> Tensor:
        b, n_prompts = embeddings.shape[0], prompts.shape[0]
        if self.decode_mode == "joint":
            return self.sam.predict_mask_groups(embeddings, prompts[None],
                                                passive_groups=passive)
        emb = embeddings.repeat_interleave(n_prompts, dim=0)
        masks, _ = self.sam.predict_masks(emb, sparse_embeddings=prompts.repeat(b, 1, 1))
        return masks.view(b, n_prompts, *masks.shape[-2:])

    def _to_size(self, masks: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, P, m, m)`` mask logits of the padded ``S x S`` input -> ``(B, P, H, W)``."""
        s = self.image_size
        h, w = self._resized(*size)
        masks = masks.float()
        if masks.shape[-1] != s:
            masks = F.interpolate(masks, size=(s, s), mode="bilinear", align_corners=False)
        masks = masks[..., :h, :w]
        if (h, w) != tuple(size):
            masks = F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)
        return masks
