import pytest
import torch

from medcl.data.transforms import (
    RandomAffine2D,
    apply_affine,
    center_crop_or_pad,
    crop_around,
    random_crop,
)
from medcl.errors import ConfigError

K = 4
IGNORE = K


def _batch(b=4, h=32, w=32, block=8):
    g = torch.Generator().manual_seed(1)
    # blocky labels so that most pixels are far from a class boundary
    coarse = torch.randint(0, K, (b, h // block, w // block), generator=g)
    labels = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    labels[:, :2, :2] = IGNORE  # some unlabelled pixels
    image = labels.float().unsqueeze(1)
    return image, labels


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(64, 64), (64, 96)])
def test_image_and_labels_stay_aligned(shape):
    # image = labels as float: after the warp, round(image) must equal the label except where
    # bilinear interpolation and nearest neighbour disagree along block edges. A checkerboard of
    # classes 1 and 2 keeps neighbouring values 1 apart, so they rarely disagree.
    rows = torch.arange(shape[0]) // 16
    cols = torch.arange(shape[1]) // 16
    labels = (1 + (rows[:, None] + cols[None, :]) % 2).expand(2, *shape).clone()
    image = labels.float().unsqueeze(1)
    aug = RandomAffine2D(rotate_degrees=30, scale_range=(0.8, 1.2), translate=0.1)
    out_image, out_labels = aug(image, labels, ignore_index=IGNORE, generator=_gen())
    assert out_image.shape == image.shape and out_labels.shape == labels.shape
    assert out_labels.dtype == labels.dtype
    keep = (out_labels != IGNORE) & (out_image[:, 0] > 0.5)  # away from the zero-padded border
    assert keep.sum() > 0.5 * keep.numel()
    agree = (out_image[:, 0].round().long() == out_labels)[keep].float().mean()
    assert agree > 0.98
    # a misalignment (here: by a flip) would be caught
    flipped = (out_image[:, 0].flip(-1).round().long() == out_labels)[keep].float().mean()
    assert flipped < 0.9


def test_identity():
    image, labels = _batch(h=16, w=24)
    image = image + torch.rand(image.shape, generator=_gen(3))
    aug = RandomAffine2D(rotate_degrees=0, scale_range=(1, 1), flip_prob=0, rot90=False)
    out_image, out_labels, theta = aug(image, labels, ignore_index=IGNORE, generator=_gen(),
                                       return_matrices=True)
    assert torch.equal(theta, torch.eye(2, 3).expand(4, 2, 3))
    assert torch.allclose(out_image, image, atol=1e-5)
    assert torch.equal(out_labels, labels)


def test_flips_and_quarter_turns_are_exact():
    image, labels = _batch(b=16)
    aug = RandomAffine2D(rotate_degrees=0, scale_range=(1, 1), flip_prob=0.5, rot90=True)
    out_image, out_labels = aug(image, labels, ignore_index=IGNORE, generator=_gen())
    for i in range(16):
        candidates = [torch.rot90(lab, k, (0, 1)) for lab in (labels[i], labels[i].flip(0))
                      for k in range(4)]
        assert any(torch.equal(out_labels[i], c) for c in candidates)
    assert torch.allclose(out_image[:, 0], out_labels.float(), atol=1e-4)


def test_outside_pixels_become_ignore_never_background():
    labels = torch.zeros(2, 16, 16, dtype=torch.long)  # all background
    image = torch.ones(2, 1, 16, 16)
    aug = RandomAffine2D(rotate_degrees=45, scale_range=(0.5, 0.5), flip_prob=0, rot90=False)
    out_image, out_labels = aug(image, labels, ignore_index=IGNORE, generator=_gen())
    # zooming out by 2 brings in a wide border from outside the source
    assert (out_labels == IGNORE).any()
    assert set(out_labels.unique().tolist()) <= {0, IGNORE}
    assert (out_image[:, 0][out_labels == IGNORE] < 0.5).all()
    # corners are surely outside
    assert (out_labels[:, 0, 0] == IGNORE).all()


def test_same_seed_same_output_and_resumable():
    image, labels = _batch()
    aug = RandomAffine2D(translate=0.1)
    a = aug(image, labels, ignore_index=IGNORE, generator=_gen(7))
    b = aug(image, labels, ignore_index=IGNORE, generator=_gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g = _gen(7)
    aug(image, labels, ignore_index=IGNORE, generator=g)
    state = g.get_state()
    second = aug(image, labels, ignore_index=IGNORE, generator=g)
    g2 = torch.Generator()
    g2.set_state(state)
    again = aug(image, labels, ignore_index=IGNORE, generator=g2)
    assert torch.equal(second[1], again[1])
    c = aug(image, labels, ignore_index=IGNORE, generator=_gen(8))
    assert not torch.equal(a[0], c[0])


def test_apply_affine_reuses_matrices_and_labels_optional():
    image, labels = _batch()
    aug = RandomAffine2D()
    out_image, out_labels, theta = aug(image, labels, ignore_index=IGNORE, generator=_gen(),
                                       return_matrices=True)
    assert theta.shape == (4, 2, 3)
    again_image, none = apply_affine(image, None, theta, ignore_index=IGNORE)
    assert none is None
    assert torch.equal(again_image, out_image)


def test_bad_options_and_shapes():
    with pytest.raises(ConfigError, match="scale_range"):
        RandomAffine2D(scale_range=(1.2, 0.8))
    with pytest.raises(ConfigError, match="valid: zeros, border, reflection"):
        RandomAffine2D(image_padding="wrap")
    image, labels = _batch()
    with pytest.raises(ValueError, match="labels"):
        RandomAffine2D()(image, labels[:, :8], ignore_index=IGNORE, generator=_gen())


def test_random_crop_and_pad():
    image = torch.arange(2 * 6 * 4, dtype=torch.float32).view(2, 6, 4)
    labels = torch.ones(6, 4, dtype=torch.long)
    out_image, out_labels = random_crop(image, labels, (4, 8), ignore_index=IGNORE,
                                        generator=_gen())
    assert out_image.shape == (2, 4, 8) and out_labels.shape == (4, 8)
    # width padded 4 -> 8 (2 each side): pad columns are 0 / ignore
    assert torch.equal(out_labels[:, :2], torch.full((4, 2), IGNORE))
    assert torch.equal(out_labels[:, 2:6], torch.ones(4, 4, dtype=torch.long))
    assert torch.equal(out_image[:, :, :2], torch.zeros(2, 4, 2))
    # crop is a window of the source, aligned between image and labels
    top = int(out_image[0, 0, 2]) // 4
    assert torch.equal(out_image[:, :, 2:6], image[:, top:top + 4])
    a = random_crop(image, labels, (3, 3), ignore_index=IGNORE, generator=_gen(5))
    b = random_crop(image, labels, (3, 3), ignore_index=IGNORE, generator=_gen(5))
    assert torch.equal(a[0], b[0])


def test_center_crop_or_pad():
    image = torch.arange(5 * 4, dtype=torch.float32).view(1, 5, 4)
    labels = torch.zeros(5, 4, dtype=torch.long)
    out_image, out_labels = center_crop_or_pad(image, labels, (3, 6), ignore_index=IGNORE)
    assert out_image.shape == (1, 3, 6)
    assert torch.equal(out_image[0, :, 1:5], image[0, 1:4])
    assert torch.equal(out_labels[:, [0, 5]], torch.full((3, 2), IGNORE))
    assert torch.equal(out_labels[:, 1:5], torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="crop size"):
        center_crop_or_pad(image, labels, (0, 3), ignore_index=IGNORE)


def test_non_square_rotation_does_not_shear():
    # a centred disc is unchanged by any rotation about the centre, if pixels stay square
    h, w = 32, 64
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2,
                            indexing="ij")
    labels = ((yy ** 2 + xx ** 2) < 12 ** 2).long().expand(4, h, w).clone()
    aug = RandomAffine2D(rotate_degrees=180, scale_range=(1, 1), flip_prob=0.5, rot90=True)
    _, out_labels = aug(labels.float().unsqueeze(1), labels, ignore_index=IGNORE, generator=_gen())
    inside = out_labels != IGNORE
    mismatch = (out_labels != labels)[inside].float().mean()
    assert mismatch < 0.03


def test_crop_around_keeps_the_pixel_inside_the_window():
    """A 10 x 12 image, 4 x 4 crops around pixel (9, 0) (a corner): every crop holds it."""
    image = torch.zeros(1, 10, 12)
    image[0, 9, 0] = 1.0
    labels = torch.zeros(10, 12, dtype=torch.long)
    labels[9, 0] = 2
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        img, lab = crop_around(image, labels, (4, 4), (9, 0), ignore_index=5, generator=gen)
        assert img.shape == (1, 4, 4) and img.sum() == 1 and (lab == 2).sum() == 1


def test_crop_around_on_a_slice_smaller_than_the_crop_tracks_the_padding():
    """A 2 x 2 slice padded to 6 x 6: the marked pixel (1, 1) sits at (3, 3) after even padding
    (2 before), and the labels around it are the ignore value."""
    image = torch.zeros(1, 2, 2)
    image[0, 1, 1] = 1.0
    labels = torch.zeros(2, 2, dtype=torch.long)
    img, lab = crop_around(image, labels, (6, 6), (1, 1), ignore_index=9,
                           generator=torch.Generator().manual_seed(1))
    assert img[0, 3, 3] == 1 and (lab == 9).sum() == 32
