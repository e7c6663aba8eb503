import math

import pytest
import torch

from medcl.data.warp import rotation_matrices, warp
from medcl.errors import ConfigError
from medcl.method.mixing import (
    InterImageMix,
    IntraImageMix,
    box_masks,
    sample_beta,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_beta_samples_match_the_arcsine_moments():
    draws = sample_beta(0.5, 50_000, _gen())
    assert 0 <= draws.min() and draws.max() <= 1
    assert draws.mean().item() == pytest.approx(0.5, abs=0.01)
    assert draws.var().item() == pytest.approx(0.125, abs=0.005)  # ab / ((a+b)^2 (a+b+1))
    assert torch.equal(sample_beta(0.5, 7, _gen(3)), sample_beta(0.5, 7, _gen(3)))


def test_rotation_by_quarter_turn_moves_pixels_like_rot90():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    theta = rotation_matrices(torch.tensor([math.pi / 2]), 4, 4)
    out = warp(x, theta, mode="nearest")
    assert torch.equal(out, torch.rot90(x, k=1, dims=(2, 3))) or torch.equal(
        out, torch.rot90(x, k=-1, dims=(2, 3)))


def test_box_masks():
    m = box_masks(torch.tensor([[1, 2, 3, 4]]), 4, 5)
    assert m.sum() == 4 and m[0, 0, 1:3, 2:4].all()


def test_zero_angle_views_equal_the_image_and_keep_their_source():
    image = torch.randn(3, 1, 8, 8)
    targets = torch.zeros(3, 4, 8, 8)
    targets[:, 1, 2:4, 2:4] = 1
    views = IntraImageMix(max_angle=0)(image, targets, generator=_gen())
    assert views.source.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.allclose(views.image, image[views.source], atol=1e-5)
    assert torch.allclose(views.targets, targets[views.source], atol=1e-5)


def test_rotated_in_pixels_are_unlabelled_not_background():
    image = torch.ones(2, 1, 16, 16)
    targets = torch.zeros(2, 4, 16, 16)
    targets[:, 0] = 1  # every pixel labelled background
    mix = IntraImageMix(max_angle=45, box="random", box_min=0.2, box_max=0.2)
    views = mix(image, targets, generator=_gen(1))
    corner = views.targets[:, :, 0, 0]
    assert torch.all(corner.sum(1) < 1)  # corners lost some or all target mass
    assert torch.all(views.targets.sum(1) <= 1 + 1e-6)
    # no class other than background ever appears
    assert views.targets[:, 1:].abs().sum() == 0


def test_roi_box_keeps_the_scribbled_foreground_intact():
    image = torch.randn(1, 1, 32, 32)
    targets = torch.zeros(1, 4, 32, 32)
    targets[0, 3, 12:18, 10:20] = 1
    mix = IntraImageMix(max_angle=0, box="roi", roi_margin=0.0)
    boxes = mix._roi_boxes(targets, fallback=torch.tensor([[0, 0, 32, 32]]))
    assert boxes.tolist() == [[12, 10, 18, 20]]
    views = mix(image, targets, generator=_gen())
    # inside the box the view is the (unrotated) image itself
    assert torch.allclose(views.image[0, :, 12:18, 10:20], image[0, :, 12:18, 10:20], atol=1e-5)


def test_inter_mix_formula_and_tag_union():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    partner, lam = InterImageMix(partner="reverse").sample(3, _gen())
    assert partner.tolist() == [2, 1, 0]
    mixed = InterImageMix.mix(x, partner, lam)
    assert mixed[0].item() == pytest.approx(lam[0].item() * 1 + (1 - lam[0].item()) * 4)
    tags = torch.tensor([[1, 0, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert InterImageMix.mix_tags(tags, partner).tolist() == [
        [True, False, True], [True, True, False], [True, False, True]]


def test_a_mix_with_an_untagged_slice_gets_no_tags():
    """An untagged slice (no annotated class: its content is unknown) mixed with a tagged one:
    the mix keeps no tag, so the existence loss skips it instead of pushing it onto the tagged
    partner's classes (it used to get the partner's tags)."""
    tags = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    partner = torch.tensor([1, 0, 0])
    assert InterImageMix.mix_tags(tags, partner).tolist() == [
        [False, False, False], [False, False, False], [True, True, True]]


def test_options_are_validated():
    with pytest.raises(ConfigError, match="unknown box policy 'centre'; valid: roi, random"):
        IntraImageMix(box="centre")
    with pytest.raises(ConfigError, match="unknown partner policy"):
        InterImageMix(partner="next")
