import numpy as np
import pytest
import torch
from conftest import write_nifti

from medcl.data.datasets import Case
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import (
    PreprocessConfig,
    field_of_view,
    has_zero_filled_borders,
    image_to_slices,
    labels_to_slices,
    normalize_intensity,
    pad_to_multiple,
    resampled_size,
    restore_probs,
    zero_filled_fraction,
)
from medcl.data.slices import load_case
from medcl.errors import ConfigError

SPEC = LabelSpec.from_dict({"labels": {"background": 0, "LV": 1, "ignore": 2}})


def _acquisition():
    """A 10 x 10 slice: zero filling in the left columns, a dark hole inside the body."""
    img = np.full((10, 10, 2, 1), 5.0, np.float32)
    img[:, :3] = 0.0          # outside the field of view, touching the border
    img[5, 6] = 0.0           # enclosed dark voxel: inside
    img[6, 6] = 9.0
    return img


def test_field_of_view_keeps_enclosed_dark_voxels():
    inside = field_of_view(_acquisition())
    assert not inside[:, :3].any()
    assert inside[:, 3:].all()


def test_normalisation_statistics_come_from_the_mask():
    img = _acquisition()
    cfg = PreprocessConfig(clip_percentiles=None)
    mask = field_of_view(img)
    out = normalize_intensity(img, cfg, mask)
    inside = img[..., 0][mask]
    expected = (9.0 - inside.mean()) / inside.std()
    assert out[6, 6, 0, 0] == pytest.approx(expected, rel=1e-5)
    assert np.all(out[:, :3] == 0)
    plain = normalize_intensity(img, cfg)
    assert abs(plain[..., 0][mask].mean()) > 0.1  # the zero filling shifts plain statistics


def test_resampling_sizes_and_round_trip():
    assert resampled_size((100, 50), (0.5, 1.0), 1.0) == (50, 50)
    assert resampled_size((7, 9), (1.0, 1.0), None) == (7, 9)
    cfg = PreprocessConfig(target_spacing=2.0, clip_percentiles=None)
    img = np.random.default_rng(0).random((20, 10, 3, 1)).astype(np.float32)
    slices = image_to_slices(img, (1.0, 2.0), cfg)
    assert slices.shape == (3, 1, 10, 10)
    labels = np.zeros((20, 10, 3), np.int64)
    labels[4:8, 2:6] = 1
    lab = labels_to_slices(labels, (1.0, 2.0), cfg)
    assert lab.shape == (3, 10, 10) and set(lab.unique().tolist()) == {0, 1}
    probs = torch.softmax(torch.randn(3, 2, 10, 10), 1)
    back = restore_probs(probs, (20, 10))
    assert back.shape == (3, 2, 20, 10)
    assert torch.allclose(back.sum(1), torch.ones(3, 20, 10), atol=1e-5)
    padded, size = pad_to_multiple(torch.zeros(1, 1, 10, 13), 8)
    assert padded.shape == (1, 1, 16, 16) and size == (10, 13)
    with pytest.raises(ConfigError, match="unknown normalization 'robust'"):
        PreprocessConfig(normalization="robust")


def test_nonzero_mask_labels_outside_background(tmp_path):
    img = _acquisition()[..., 0]
    lab = np.full((10, 10, 2), 2, np.uint8)
    lab[6, 6] = 1
    ip = write_nifti(tmp_path / "x.nii.gz", img)
    lp = write_nifti(tmp_path / "x_s.nii.gz", lab)
    case = Case("x", (ip,), lp)
    plain = load_case(case, SPEC, PreprocessConfig())
    masked = load_case(case, SPEC, PreprocessConfig(nonzero_mask=True))
    assert (plain.labels == 2).all(dim=(1, 2)).tolist() == [False, False]
    assert (masked.labels[:, :, :3] == 0).all()       # outside: background
    assert (masked.labels[:, :, 3:] != 0).all()       # inside: unchanged
    assert masked.labels[0, 6, 6] == 1


def test_predictor_predicts_background_outside_the_field_of_view(tmp_path):
    from medcl.data.io import load_image
    from medcl.inference.predictor import Predictor
    from medcl.models import build_model

    ip = write_nifti(tmp_path / "x.nii.gz", _acquisition()[..., 0])
    model = build_model("unet", in_channels=1, num_classes=2, widths=[4, 8])
    for masked in (False, True):
        predictor = Predictor(model, SPEC, PreprocessConfig(nonzero_mask=masked))
        probs = predictor.predict_volume(load_image([ip]))
        assert probs.shape == (10, 10, 2, 2)
        outside = probs[:, :3]
        assert np.all(outside[..., 0] == 1.0) == masked


def test_zero_filling_is_detected_only_where_the_acquisition_is_padded():
    """A 20 x 20 x 2 body of noise inside zero padding (a 10-voxel ring: 1 - 20^2/40^2 = 75 %
    filled) is detected; the same body filling the whole grid is not."""
    rng = np.random.default_rng(0)
    padded = np.zeros((40, 40, 2, 1), dtype=np.float32)
    padded[10:30, 10:30] = rng.uniform(1, 2, (20, 20, 2, 1))
    assert zero_filled_fraction(padded) == pytest.approx(0.75)
    full = rng.uniform(1, 2, (40, 40, 2, 1)).astype(np.float32)
    # only the single minimum voxel of each channel can count as "filling" (here 1 of 3200)
    assert zero_filled_fraction(full) <= 1 / (40 * 40 * 2) + 1e-9
    assert has_zero_filled_borders([padded, padded, full])[0]
    assert not has_zero_filled_borders([full, full, padded])[0]
