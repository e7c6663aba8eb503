"""Pinning tests: include_background of the Dice loss, hand-computed on 2 x 2 images."""

from __future__ import annotations

import pytest
import torch

from medcl.method.losses import DEFAULT_SMOOTH, DiceLoss

S = DEFAULT_SMOOTH


def _two_class_probs(p1):
    p1 = torch.tensor(p1, dtype=torch.float32).view(1, 1, 2, 2)
    return torch.cat([1 - p1, p1], dim=1)


def test_default_smooth_is_1e_5():
    assert DEFAULT_SMOOTH == 1e-5


def test_include_background_changes_the_loss_when_background_dice_differs():
    """labels [[0, 1], [1, 1]], P(class 1) = [[0, 1], [1, 0]]:
    class 1: intersection 2, sum p 2, sum y 3 -> dice1 = (4 + s) / (5 + s);
    class 0: intersection 1, sum p 2, sum y 1 -> dice0 = (2 + s) / (3 + s)."""
    probs = _two_class_probs([[0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([[[0, 1], [1, 1]]])
    dice1, dice0 = (4 + S) / (5 + S), (2 + S) / (3 + S)
    without = DiceLoss(softmax=False, include_background=False)(probs, labels).item()
    with_bg = DiceLoss(softmax=False, include_background=True)(probs, labels).item()
    default = DiceLoss(softmax=False)(probs, labels).item()
    assert without == pytest.approx(1 - dice1, abs=1e-6)  # 0.2
    assert with_bg == pytest.approx(1 - (dice0 + dice1) / 2, abs=1e-6)  # 0.2667
    assert default == without  # the default leaves the background out
    assert with_bg - without == pytest.approx((dice1 - dice0) / 2, abs=1e-6)


def test_include_background_does_not_matter_when_background_dice_equals_foreground_dice():
    """labels [[0, 1], [0, 1]], P(class 1) = [[0, 1], [1, 0]]: both classes have intersection 1
    and sums 2 + 2, so dice0 = dice1 = (2 + s) / (4 + s) and both losses are 0.5."""
    probs = _two_class_probs([[0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([[[0, 1], [0, 1]]])
    expected = 1 - (2 + S) / (4 + S)
    for include in (False, True):
        value = DiceLoss(softmax=False, include_background=include)(probs, labels).item()
        assert value == pytest.approx(expected, abs=1e-6)


def test_include_background_with_soft_probabilities_and_logits():
    """Soft case through softmax: logits with P(class 1) = [[0.25, 0.75], [0.5, 0.5]], labels
    [[0, 1], [1, 0]]: class 1: I = 0.75 + 0.5 = 1.25, sum p = 2, sum y = 2 -> (2.5+s)/(4+s);
    class 0: I = 0.75 + 0.5 = 1.25, sum p = 2, sum y = 2 -> the same; then skew one pixel."""
    p1 = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    logits = torch.stack([torch.zeros(2, 2), torch.log(p1 / (1 - p1))])[None]
    labels = torch.tensor([[[0, 1], [1, 0]]])
    same = (2.5 + S) / (4 + S)
    for include in (False, True):
        assert DiceLoss(include_background=include)(logits, labels).item() == pytest.approx(
            1 - same, abs=1e-6)
    # label [[1, 1], [1, 0]]: class 1: I = 0.25 + 0.75 + 0.5 = 1.5, sums 2 + 3;
    # class 0: I = 0.5, sums 2 + 1
    labels = torch.tensor([[[1, 1], [1, 0]]])
    d1, d0 = (3 + S) / (5 + S), (1 + S) / (3 + S)
    assert DiceLoss(include_background=False)(logits, labels).item() == pytest.approx(
        1 - d1, abs=1e-6)
    assert DiceLoss(include_background=True)(logits, labels).item() == pytest.approx(
        1 - (d0 + d1) / 2, abs=1e-6)


def test_include_background_false_needs_two_classes():
    logits = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="include_background=False needs at least 2 classes"):
        DiceLoss()(logits, torch.zeros(1, 2, 2, dtype=torch.long))
