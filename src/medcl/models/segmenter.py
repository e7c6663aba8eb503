"""The contract every segmentation network of medcl follows, so that objectives, the trainer
and the predictor never ask which network they run.

A :class:`Segmenter` maps ``(B, C, H, W)`` images to ``(B, K, H, W)`` class **logits** in two
stages: :meth:`~Segmenter.encode` (what the method may mix: the image itself for a UNet, the
image embeddings for a SAM-family network) and :meth:`~Segmenter.decode` (features to logits at
a given size, optionally with a *union* output: the logits ``(B, 1, H, W)`` of "any foreground",
which only prompt-based networks have; ``return_union=n`` asks for it on the first ``n`` inputs
only, so no network computes a union nobody uses). A network whose :meth:`~Segmenter.encode` is
frozen may :meth:`~Segmenter.precompute` its features once, before training.
``forward(x, stage=..., size=..., return_union=...)`` dispatches, so a wrapper
(``FastForward``) passes the stage through as keyword arguments.
"""

from __future__ import annotations

from torch import Tensor, nn

from medcl.errors import ConfigError

STAGES = ("full", "encode", "decode")


class Segmenter(nn.Module):
    """Base class: ``forward(x (B, C, H, W)) -> logits (B, K, H, W)``.

    Subclasses implement :meth:`decode` (and :meth:`encode` when their mixable features are not
    the image) and set :attr:`has_union` when :meth:`decode` can return the union output.
    """

    #: whether ``decode(..., return_union=True)`` is supported
    has_union: bool = False
    #: whether :meth:`precompute` stores anything (a frozen encoder with a feature store)
    can_precompute: bool = False
    #: bytes held by the precomputed features
    precomputed_bytes: int = 0
    #: the square side every input is resized to inside the network (SAM family), or ``None``
    #: for a fully convolutional network that sees any slice at its own scale
    fixed_input_size: int | None = None

    def precompute(self, x: Tensor) -> int:
        """Compute and keep the features of ``x (B, C, H, W)`` for later :meth:`encode` calls;
        returns how many were computed (0: nothing to precompute)."""
        return 0

    def encode(self, x: Tensor) -> Tensor:
        """The features the method mixes, ``(B, D, h, w)``; the image itself by default."""
        return x

    def decode(self, features: Tensor, size: tuple[int, int], *,
               return_union: bool | int = False) -> Tensor | tuple[Tensor, Tensor]:
        """``(B, K, H, W)`` logits at ``size = (H, W)`` (and the union logits ``(B, 1, H, W)``
        with ``return_union=True``, ``(n, 1, H, W)`` of the first ``n`` inputs with
        ``return_union=n``)."""
        raise NotImplementedError

    def check_union(self, return_union: bool | int) -> None:
        if return_union and not self.has_union:
            raise ConfigError(f"{type(self).__name__} has no union output; the prompt "
                              "consistency terms need a SAM-family model built with "
                              "union_prompt=True")

    def forward(self, x: Tensor, *, stage: str = "full", size: tuple[int, int] | None = None,
                return_union: bool | int = False):
        if stage == "encode":
            return self.encode(x)
        if stage == "decode":
            if size is None:
                raise ValueError("stage='decode' needs the output size=(H, W)")
            return self.decode(x, size, return_union=return_union)
        if stage != "full":
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
        return self.decode(self.encode(x), tuple(x.shape[-2:]), return_union=return_union)
