"""MedCL's loss terms on tiny tensors with hand-derived expectations."""

import math

import pytest
import torch

from medcl.errors import ConfigError
from medcl.method.clustering import (
    AnatomyProjector,
    PrototypeClustering,
    anatomy_maps,
    global_cluster_loss,
    nt_xent,
    sinkhorn,
)
from medcl.method.losses import existence_loss, mix_consistency_loss, soft_partial_ce
from medcl.method.mixing import InterImageMix


def test_soft_pce_ignores_pixels_without_target_mass():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    targets = torch.zeros(1, 3, 2, 2)
    targets[0, 1, 0, 0] = 1.0   # one labelled pixel
    targets[0, 2, 1, 1] = 0.5   # one half-weight (mixed) pixel
    loss = soft_partial_ce(logits, targets)
    logp = logits.log_softmax(1)
    expected = -(logp[0, 1, 0, 0] + 0.5 * logp[0, 2, 1, 1]) / 1.5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, :, 0, 1] == 0) and torch.all(logits.grad[0, :, 1, 0] == 0)
    empty = soft_partial_ce(logits, torch.zeros_like(targets))
    assert empty.item() == 0.0


def test_existence_loss_zero_on_present_classes_and_grows_otherwise():
    tags = torch.tensor([[True, False, True]])
    probs = torch.zeros(1, 3, 1, 2)
    probs[0, 0] = 0.5
    probs[0, 2] = 0.5
    assert existence_loss(probs, tags).item() == pytest.approx(0.0, abs=1e-6)
    probs2 = probs.clone()
    probs2[0, :, 0, 0] = torch.tensor([0.25, 0.5, 0.25])  # half the mass on an absent class
    assert existence_loss(probs2, tags).item() == pytest.approx(-math.log(0.5) / 2, rel=1e-5)
    probs3 = probs.clone()
    probs3[0, :, :, :] = torch.tensor([0.1, 0.8, 0.1]).view(3, 1, 1)
    assert existence_loss(probs3, tags) > existence_loss(probs2, tags)
    assert existence_loss(probs3, torch.zeros_like(tags)).item() == 0.0  # no tags: skipped


def test_mix_consistency_zero_for_a_network_linear_in_the_mix():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 5)
    weight = torch.rand(3, 3)

    def linear(inp):
        return torch.einsum("kc,bchw->bkhw", weight, inp)

    partner, lam = InterImageMix(partner="shuffle").sample(4, gen)
    loss = mix_consistency_loss(InterImageMix.mix(linear(x), partner, lam),
                                linear(InterImageMix.mix(x, partner, lam)))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    nonlinear = lambda inp: linear(inp) ** 3  # noqa: E731
    loss = mix_consistency_loss(InterImageMix.mix(nonlinear(x), partner, lam),
                                nonlinear(InterImageMix.mix(x, partner, lam)))
    assert loss.item() > 1e-3


def test_global_loss_hand_values_separated_vs_collapsed():
    centres = torch.eye(8)[:4]
    union = centres[1:].sum(0, keepdim=True)
    separated = torch.cat([centres, union]).expand(6, 5, 8)
    # n = e (compact), alpha = e (union parallel to the sum), S = 6 pairs x exp(0)
    assert global_cluster_loss(separated).item() == pytest.approx(math.log(1 + 3 / math.e),
                                                                  rel=1e-5)
    collapsed = torch.ones(6, 5, 8)
    # every cosine is 1: -log(2e / (2e + 6e)) = log 4
    assert global_cluster_loss(collapsed).item() == pytest.approx(math.log(4), rel=1e-5)


def test_nt_xent_matched_below_shuffled_and_zero_for_single_pair():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(8, 16, generator=gen)
    matched = nt_xent(z, z + 0.01 * torch.randn(8, 16, generator=gen))
    shuffled = nt_xent(z, z[torch.randperm(8, generator=gen)])
    assert matched < shuffled
    one = torch.randn(1, 4, generator=gen)
    assert nt_xent(one, one * 2).item() == pytest.approx(0.0, abs=1e-6)  # only one candidate


def test_sinkhorn_is_balanced_and_prototype_loss_backpropagates():
    scores = torch.randn(12, 4)
    q = sinkhorn(scores, eps=0.5, iterations=20)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0), atol=1e-2)
    codes = torch.randn(3, 4, 8, requires_grad=True)
    loss = PrototypeClustering(code_dim=8, num_prototypes=5)(codes, codes + 0.1)
    loss.backward()
    assert codes.grad.abs().sum() > 0


def test_anatomy_maps_and_heads():
    probs = torch.softmax(torch.randn(2, 4, 12, 20), 1)
    maps = anatomy_maps(probs)
    assert maps.shape == (2, 5, 12, 20)
    assert torch.allclose(maps[:, 4], 1 - probs[:, 0], atol=1e-6)
    pooled = AnatomyProjector(code_dim=6, grid=4, hidden=8)
    assert pooled(maps).shape == (2, 5, 6)
    assert pooled(anatomy_maps(torch.softmax(torch.randn(1, 4, 33, 17), 1))).shape == (1, 5, 6)
    full = AnatomyProjector(code_dim=6, form="full", hidden=8, input_size=(12, 20))
    assert full(maps).shape == (2, 5, 6)
    with pytest.raises(ValueError, match=r"built for \(12, 20\)"):
        full(maps[..., :10])
    with pytest.raises(ConfigError, match="needs input_size"):
        AnatomyProjector(form="full")
