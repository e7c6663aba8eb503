import math

import pytest
import torch
import torch.nn.functional as F

from medcl.method.losses import DiceLoss, PartialCrossEntropy, SupervisedLoss, one_hot

K = 2
IGNORE = K


def _logits():
    # (1, 2, 2, 2): pixel (0,0) favours class 0, (0,1) class 1, (1,0) tie, (1,1) class 1
    return torch.tensor([[[[2.0, 0.0], [1.0, -1.0]],
                          [[0.0, 1.0], [1.0, 2.0]]]], requires_grad=True)


def test_pce_equals_ce_on_labelled_pixels():
    logits = _logits()
    labels = torch.tensor([[[0, IGNORE], [1, IGNORE]]])
    loss = PartialCrossEntropy(IGNORE)(logits, labels)
    # hand computed: pixel (0,0) label 0: -log(e^2/(e^2+1)); pixel (1,0) label 1: log 2
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain = F.cross_entropy(logits.detach()[:, :, [0, 1], [0, 0]], torch.tensor([[0, 1]]))
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


def test_pce_zero_gradient_at_ignored_pixels():
    logits = _logits()
    labels = torch.tensor([[[0, IGNORE], [1, IGNORE]]])
    PartialCrossEntropy(IGNORE)(logits, labels).backward()
    grad = logits.grad
    assert torch.equal(grad[0, :, 0, 1], torch.zeros(K))
    assert torch.equal(grad[0, :, 1, 1], torch.zeros(K))
    assert grad[0, :, 0, 0].abs().sum() > 0
    assert grad[0, :, 1, 0].abs().sum() > 0


def test_pce_all_ignored_is_zero_and_backward_works():
    logits = _logits()
    labels = torch.full((1, 2, 2), IGNORE)
    loss = PartialCrossEntropy(IGNORE)(logits, labels)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_pce_bad_label_raises():
    labels = torch.tensor([[[0, 5], [1, IGNORE]]])
    with pytest.raises(ValueError, match="label value 5"):
        PartialCrossEntropy(IGNORE)(_logits(), labels)
    with pytest.raises(ValueError, match="label value -1"):
        PartialCrossEntropy(IGNORE)(_logits(), torch.tensor([[[0, -1], [1, 1]]]))


def test_pce_shape_mismatch_raises():
    with pytest.raises(ValueError, match="labels"):
        PartialCrossEntropy(IGNORE)(_logits(), torch.zeros(1, 3, 2, dtype=torch.long))


def test_one_hot_zero_at_ignored():
    labels = torch.tensor([[[0, IGNORE], [1, 1]]])
    encoded = one_hot(labels, K, IGNORE)
    assert encoded.shape == (1, K, 2, 2)
    assert encoded.dtype == torch.float32
    expected = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]],
                              [[0.0, 0.0], [1.0, 1.0]]]])
    assert torch.equal(encoded, expected)
    with pytest.raises(ValueError, match="label value 3"):
        one_hot(torch.tensor([[[3]]]), K, IGNORE)


def test_dice_perfect_prediction_is_zero():
    labels = torch.tensor([[[0, 1], [1, 0]]])
    logits = 50.0 * one_hot(labels, K)
    for include_background in (False, True):
        loss = DiceLoss(include_background=include_background)(logits, labels)
        assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_dice_hand_computed_and_ignored():
    # probabilities via softmax of equal logits -> 0.5 everywhere
    logits = torch.zeros(1, K, 2, 2)
    labels = torch.tensor([[[0, 1], [IGNORE, IGNORE]]])
    loss = DiceLoss(ignore_index=IGNORE, smooth=0.0)(logits, labels)
    # class 1 over the 2 labelled pixels: intersection 0.5, sum p 1.0, sum y 1 -> dice 0.5
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    # ignored pixels do not matter, whatever the logits there
    logits2 = logits.clone()
    logits2[0, 1, 1] = 10.0
    assert DiceLoss(ignore_index=IGNORE, smooth=0.0)(logits2, labels).item() == pytest.approx(0.5)


def test_supervised_loss_is_ce_plus_dice():
    logits = _logits()
    labels = torch.tensor([[[0, 1], [1, 1]]])
    total = SupervisedLoss(IGNORE, dice_weight=0.5)(logits, labels)
    ce = PartialCrossEntropy(IGNORE)(logits, labels)
    dice = DiceLoss(ignore_index=IGNORE)(logits, labels)
    assert total.item() == pytest.approx(ce.item() + 0.5 * dice.item(), rel=1e-6)
    total.backward()
