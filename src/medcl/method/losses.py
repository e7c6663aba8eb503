"""Segmentation losses on logits and class-index label maps with an ignore value.

Label maps are ``(B, H, W)`` integer tensors holding class indices ``0..K-1`` and
``ignore_index`` for unlabelled pixels (see :mod:`medcl.data.labels`); predictions are
``(B, K, H, W)`` **logits**.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.data.labels import BACKGROUND
from medcl.errors import ConfigError

DEFAULT_SMOOTH = 1e-5
MIN_TARGET_MASS = 1e-6  # denominator floor of soft pCE; the numerator is exactly 0 without targets
CLASS_DIM = 1


def check_labels(labels: Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Raise ``ValueError`` unless ``labels`` is an integer tensor with values in
    ``[0, num_classes)`` or equal to ``ignore_index``."""
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} collides with a class index "
                         f"(num_classes={num_classes}); it must be outside [0, {num_classes})")
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        value = int(labels[bad][0])
        valid = f"[0, {num_classes})" + ("" if ignore_index is None else f" or {ignore_index}")
        raise ValueError(f"label value {value} is not a class index {valid}")


def _check_pair(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 4:
        raise ValueError(f"expected logits (B, K, H, W), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(f"expected labels (B, H, W) = {expected} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")


def one_hot(labels: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """One-hot encode a label map.

    Args:
        labels: ``(B, H, W)`` integer class indices (``ignore_index`` where unlabelled).
        num_classes: ``K``.
        ignore_index: value of unlabelled pixels, or ``None`` if every pixel is labelled.

    Returns:
        ``(B, K, H, W)`` float tensor; all-zero vectors at ignored pixels.

    Raises:
        ValueError: naming the offending value if a label is out of range.
    """
    check_labels(labels, num_classes, ignore_index)
    labels = labels.long()
    if ignore_index is None:
        return F.one_hot(labels, num_classes).movedim(-1, CLASS_DIM).float()
    ignored = labels == ignore_index
    encoded = F.one_hot(labels.masked_fill(ignored, BACKGROUND), num_classes)
    encoded = encoded.masked_fill(ignored.unsqueeze(-1), 0)
    return encoded.movedim(-1, CLASS_DIM).float()


class PartialCrossEntropy(nn.Module):
    """Cross-entropy averaged over the labelled pixels only (partial CE for scribbles).

    ``forward(logits (B, K, H, W), labels (B, H, W) long) -> scalar``. Ignored pixels contribute
    neither to the loss nor to the gradient. With no labelled pixel the loss is ``0`` and still
    attached to the graph, so ``.backward()`` works and gives zero gradients.
    """

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        _check_pair(logits, labels)
        check_labels(labels, logits.shape[CLASS_DIM], self.ignore_index)
        labels = labels.long()
        total = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="sum")
        count = (labels != self.ignore_index).sum().clamp(min=1)
        return total / count


class DiceLoss(nn.Module):
    """Soft Dice loss ``1 - mean_k dice_k`` on softmax probabilities.

    Dice of class ``k`` is computed over the whole batch:
    ``(2 sum p_k y_k + smooth) / (sum p_k + sum y_k + smooth)``, where the sums run over the
    non-ignored pixels (every pixel when ``ignore_index`` is ``None``).

    Args:
        ignore_index: value of unlabelled pixels, or ``None``.
        include_background: whether class 0 takes part in the mean.
        smooth: added to numerator and denominator; a class absent from both the prediction and
            the labels then has a Dice of 1.
        softmax: apply softmax to the input (``True``: input is logits; ``False``: input is
            already probabilities).

    ``forward(logits (B, K, H, W), labels (B, H, W) long) -> scalar``.
    """

    def __init__(self, ignore_index: int | None = None, include_background: bool = False,
                 smooth: float = DEFAULT_SMOOTH, softmax: bool = True) -> None:
        super().__init__()
        if smooth < 0:
            raise ConfigError(f"smooth must be >= 0, got {smooth}")
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.smooth = float(smooth)
        self.softmax = softmax

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        _check_pair(logits, labels)
        num_classes = logits.shape[CLASS_DIM]
        if not self.include_background and num_classes < 2:
            raise ValueError("include_background=False needs at least 2 classes, got 1")
        probs = logits.softmax(CLASS_DIM) if self.softmax else logits
        target = one_hot(labels, num_classes, self.ignore_index).to(probs.dtype)
        weight = None
        if self.ignore_index is not None:
            weight = (labels != self.ignore_index).unsqueeze(CLASS_DIM).to(probs.dtype)
        return soft_dice_loss(probs, target, weight, include_background=self.include_background,
                              smooth=self.smooth)


def labelled_mask(targets: Tensor) -> Tensor:
    """``(B, 1, H, W)`` float mask, 1 where the soft targets ``(B, K, H, W)`` carry any mass (a
    scribbled pixel, or a mix that includes one), 0 at unlabelled pixels."""
    return (targets.sum(CLASS_DIM, keepdim=True) > 0).to(targets.dtype)


def soft_dice_loss(probs: Tensor, targets: Tensor, weight: Tensor | None = None, *,
                   include_background: bool = False, smooth: float = DEFAULT_SMOOTH) -> Tensor:
    """``1 - mean_k dice_k`` between probabilities and (soft) targets.

    Args:
        probs: ``(B, K, H, W)`` probabilities.
        targets: ``(B, K, H, W)`` one-hot or soft targets.
        weight: ``(B, 1, H, W)`` pixel weights (1 labelled, 0 unlabelled) or ``None`` (all 1).
        include_background: whether class 0 takes part in the mean.
        smooth: added to numerator and denominator.
    """
    if weight is not None:
        probs = probs * weight
        targets = targets * weight
    dims = (0, 2, 3)
    intersection = (probs * targets).sum(dims)
    denominator = probs.sum(dims) + targets.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[BACKGROUND + 1:]
    return 1 - dice.mean()


def soft_partial_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Partial cross-entropy with soft targets: ``-sum(Y log P) / sum(Y)``.

    Args:
        logits: ``(B, K, H, W)`` logits.
        targets: ``(B, K, H, W)`` non-negative soft targets, all-zero at unlabelled pixels (the
            one-hot of a scribble map, or a mix of such maps).

    Returns:
        Scalar; 0 (attached to the graph) when no pixel carries target mass.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    total = -(targets * logits.log_softmax(CLASS_DIM)).sum()
    return total / targets.sum().clamp(min=MIN_TARGET_MASS)


def existence_loss(probs: Tensor, tags: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Image-level class-tag loss ``-mean_pixels log sum_{c in S(x)} P_c``.

    Pushes all probability mass onto the classes present in the image.

    Args:
        probs: ``(B, K, H, W)`` probabilities.
        tags: ``(B, K)`` bool, class ``c`` present in sample ``b``. Samples without any tag are
            skipped.

    Returns:
        Scalar; 0 when every sample's mass already lies on its present classes, or when no
        sample has tags.
    """
    if tags.shape != probs.shape[:2]:
        raise ValueError(f"tags {tuple(tags.shape)} do not match probs {tuple(probs.shape)}")
    has_tags = tags.any(dim=1)
    present = (probs * tags[:, :, None, None].to(probs.dtype)).sum(CLASS_DIM)
    per_sample = -(present.clamp(min=eps).log()).flatten(1).mean(1)
    if not bool(has_tags.any()):
        return probs.sum() * 0
    return per_sample[has_tags].mean()


def mix_consistency_loss(mixed_probs: Tensor, probs_of_mix: Tensor, *, eps: float = 1e-8) -> Tensor:
    """``1 - mean_{b,c} cos(vec(mix(P))_{b,c}, vec(P~)_{b,c})``, cosine over pixels.

    Args:
        mixed_probs: ``(B, K, H, W)`` the mix of the predictions, ``lam P_b + (1 - lam) P_pi(b)``.
        probs_of_mix: ``(B, K, H, W)`` the prediction of the mixed images.
    """
    if mixed_probs.shape != probs_of_mix.shape:
        raise ValueError(f"shapes differ: {tuple(mixed_probs.shape)} "
                         f"vs {tuple(probs_of_mix.shape)}")
    cos = F.cosine_similarity(mixed_probs.flatten(2), probs_of_mix.flatten(2), dim=2, eps=eps)
    return 1 - cos.mean()


class SupervisedLoss(nn.Module):
    """``CE + dice_weight * Dice`` for fully-supervised training (Dice without background).

    Both terms skip pixels labelled ``ignore_index``.
    ``forward(logits (B, K, H, W), labels (B, H, W) long) -> scalar``.
    """

    def __init__(self, ignore_index: int, dice_weight: float = 1.0) -> None:
        super().__init__()
        if dice_weight < 0:
            raise ConfigError(f"dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = float(dice_weight)
        self.ce = PartialCrossEntropy(ignore_index)
        self.dice = DiceLoss(ignore_index=ignore_index, include_background=False)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        loss = self.ce(logits, labels)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * self.dice(logits, labels)
        return loss


class ScribbleLoss(nn.Module):
    """The scribble loss: ``pce_weight`` x partial CE + ``dice_weight`` x Dice, both over the
    scribbled pixels only.

    Two entry points for the two forms of supervision:

    * ``forward(logits (B, K, H, W), labels (B, H, W) long)``: hard scribble maps with
      ``ignore_index`` at unlabelled pixels (:class:`PartialCrossEntropy`, :class:`DiceLoss`);
    * :meth:`soft` ``(logits, targets (B, K, H, W))``: soft targets, all-zero at unlabelled
      pixels (rotated or mixed scribbles; :func:`soft_partial_ce`, :func:`soft_dice_loss`).

    Both return the unweighted terms ``{"pce": scalar[, "dice": scalar]}`` ("dice" only when
    ``dice_weight`` is non-zero); :meth:`weigh` sums them with the weights.
    """

    def __init__(self, *, ignore_index: int, pce_weight: float = 1.0,
                 dice_weight: float = 0.0) -> None:
        super().__init__()
        if pce_weight < 0 or dice_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, "
                              f"got pce {pce_weight}, dice {dice_weight}")
        self.weights = {"pce": float(pce_weight), "dice": float(dice_weight)}
        self.pce = PartialCrossEntropy(ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index=ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        terms = {"pce": self.pce(logits, labels)}
        if self.weights["dice"]:
            terms["dice"] = self.dice(logits, labels)
        return terms

    def soft(self, logits: Tensor, targets: Tensor, probs: Tensor | None = None
             ) -> dict[str, Tensor]:
        """The terms on soft targets; ``probs`` (the softmax of ``logits``) when already made."""
        terms = {"pce": soft_partial_ce(logits, targets)}
        if self.weights["dice"]:
            probs = logits.softmax(CLASS_DIM) if probs is None else probs
            terms["dice"] = soft_dice_loss(probs, targets, labelled_mask(targets))
        return terms

    def weigh(self, terms: dict[str, Tensor]) -> Tensor:
        return sum(self.weights[name] * value for name, value in terms.items())
