"""Pinning tests: each loss weight of the MedCL and supervised objectives scales its term."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from medcl.method.losses import DiceLoss, PartialCrossEntropy
from medcl.method.objectives import SupervisedObjective
from medcl.models import build_model
from medcl.training.components import build_objective

TERMS = ("pce", "dice", "mix_pce", "mix_consistency", "existence", "global", "local")
NUM_CLASSES, IGNORE = 4, 4


def _batch():
    gen = torch.Generator().manual_seed(0)
    labels = torch.full((4, 32, 32), IGNORE)
    labels[:, 10:14, 10:20] = 3
    labels[:, 2:4, :] = 0
    labels[:, 20:22, 5:25] = 1
    labels[3] = IGNORE  # an unscribbled slice
    # class 2 is tagged absent, so the existence term is > 0 for a random network
    tags = torch.tensor([[1, 1, 0, 1]] * 4, dtype=torch.bool)
    return {"image": torch.randn(4, 1, 32, 32, generator=gen), "labels": labels, "tags": tags}


def _objective(term, weight):
    weights = {f"{t}_weight": (weight if t == term else 0.0) for t in TERMS}
    cfg = tiny_config("unused", method="medcl", head_grid=4, head_hidden=16, code_dim=8,
                      **weights)
    torch.manual_seed(0)
    return build_objective(cfg, num_classes=NUM_CLASSES, ignore_index=IGNORE)


def _model():
    torch.manual_seed(1)
    return build_model("unet", in_channels=1, num_classes=NUM_CLASSES, widths=[4, 8, 16])


@pytest.mark.parametrize("term", TERMS)
def test_medcl_loss_is_exactly_the_one_weighted_term(term):
    objective, model, batch = _objective(term, 1.0), _model(), _batch()
    values = objective.terms(model, batch, torch.Generator().manual_seed(7))
    assert term in values
    value = values[term].item()
    assert value > 1e-4  # a zero term could not tell the weights apart
    loss, logged = objective(model, batch, torch.Generator().manual_seed(7))
    assert loss.item() == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert logged[term] == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert logged["loss"] == pytest.approx(value, rel=1e-6, abs=1e-7)
    # the other terms that are computed alongside (e.g. pce) are non-zero but weigh 0
    others = [k for k in values if k != term]
    if others:
        assert sum(abs(values[k].item()) for k in others) > 1e-4


@pytest.mark.parametrize("term", TERMS)
def test_medcl_weight_half_halves_the_loss(term):
    batch = _batch()
    full, _ = _objective(term, 1.0)(_model(), batch, torch.Generator().manual_seed(7))
    half, logged = _objective(term, 0.5)(_model(), batch, torch.Generator().manual_seed(7))
    assert full.item() > 1e-4
    assert half.item() == pytest.approx(0.5 * full.item(), rel=1e-5)
    assert logged[term] == pytest.approx(full.item(), rel=1e-5)  # logged terms are unweighted


def test_medcl_terms_present_follow_the_weights():
    """Which terms are computed: pce always; dice/existence only when weighted; the mix_ and
    clustering terms come in groups (mix_pce/mix_consistency, global/local)."""
    batch, model = _batch(), _model()
    present = {t: set(_objective(t, 1.0).terms(model, batch, torch.Generator().manual_seed(7)))
               for t in TERMS}
    assert present["pce"] == {"pce"}
    assert present["dice"] == {"pce", "dice"}
    assert present["existence"] == {"pce", "existence"}
    assert present["mix_pce"] == present["mix_consistency"] == {"pce", "mix_pce",
                                                                  "mix_consistency"}
    assert present["global"] == present["local"] == {"pce", "global", "local"}


@pytest.mark.parametrize("pce_w, dice_w", [(1.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.0, 0.5),
                                           (0.5, 2.0)])
def test_supervised_loss_is_the_weighted_pce_plus_dice(pce_w, dice_w):
    objective = SupervisedObjective(supervision="scribble", ignore_index=IGNORE,
                                    pce_weight=pce_w, dice_weight=dice_w)
    model, batch = _model(), _batch()
    with torch.no_grad():
        logits = model(batch["image"])  # train mode: batch-norm batch statistics, deterministic
    pce = PartialCrossEntropy(IGNORE)(logits, batch["labels"]).item()
    dice = DiceLoss(ignore_index=IGNORE)(logits, batch["labels"]).item()
    assert pce > 0.1 and dice > 0.1
    loss, logged = objective(model, batch, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(pce_w * pce + dice_w * dice, rel=1e-5)
    assert logged["pce"] == pytest.approx(pce, rel=1e-5)
    assert ("dice" in logged) == bool(dice_w)
    if dice_w:
        assert logged["dice"] == pytest.approx(dice, rel=1e-5)
