"""Pinning tests: where predictions land, which header the outputs carry, label dtypes on disk."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_nifti
from torch import nn

from medcl.data.io import load_image
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig, normalize_intensity
from medcl.inference.predictor import Predictor, label_dtype, predict_path
from medcl.models import build_model

SHAPE = (30, 20, 3)
SPACING = (1.0, 2.0, 5.0)
BLOCK = (slice(4, 11), slice(12, 17), slice(0, 2))  # off-centre, 7 x 5 x 2 = 70 voxels
BINARY = LabelSpec(class_names=("background", "block"), label_values=(0, 1))


class ThresholdNet(nn.Module):
    """Class-1 logit = (intensity - threshold) * 1000, class 0 = minus that; records inputs."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        fg = (x[:, :1] - self.threshold) * 1000.0
        return torch.cat([-fg, fg], dim=1)


def _zscore_midpoint(fraction: float) -> float:
    """Midpoint of the z-scored background (0) and block (100) of a volume whose share
    ``fraction`` is block: mean 100 f, std 100 sqrt(f (1 - f))."""
    bg = -np.sqrt(fraction / (1 - fraction))
    block = np.sqrt((1 - fraction) / fraction)
    return float((bg + block) / 2)


def _block_volume() -> np.ndarray:
    data = np.zeros(SHAPE, np.float32)
    data[BLOCK] = 100.0
    return data


@pytest.mark.parametrize("target, grid", [(1.0, (30, 40)), (0.8, (38, 50))])
@pytest.mark.parametrize("rotated", [False, True], ids=["axis-aligned", "rotated"])
@pytest.mark.parametrize("normalization", ["zscore", "minmax"])
def test_prediction_lands_on_the_block_voxels_after_resampling(tmp_path, rotated, normalization,
                                                               target, grid):
    """A 30 x 20 x 3 volume at 1 x 2 x 5 mm is predicted on a 30 x 40 grid (target 1 mm) and
    the label map written back on the input grid equals the off-centre block voxel for voxel."""
    data = _block_volume()
    affine = None if rotated else np.diag([*SPACING, 1.0])
    src = write_nifti(tmp_path / "in" / "case.nii.gz", data, spacing=SPACING, affine=affine)
    fraction = 70 / data.size
    # zscore: background -> -sqrt(f/(1-f)) (negative), block -> sqrt((1-f)/f); minmax: 0 and 1
    threshold = _zscore_midpoint(fraction) if normalization == "zscore" else 0.5
    net = ThresholdNet(threshold)
    predictor = Predictor(net, BINARY, PreprocessConfig(target_spacing=target,
                                                        normalization=normalization),
                          batch_size=8)
    written = predict_path(src, tmp_path / "out", predictor)

    assert written == [tmp_path / "out" / "case.nii.gz"]
    assert net.seen == [(3, 1, *grid)]  # the network really saw the resampled grid
    out = nib.load(str(written[0]))
    labels = np.asanyarray(out.dataobj)
    expected = np.zeros(SHAPE, np.uint8)
    expected[BLOCK] = 1
    assert labels.shape == SHAPE
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(out.affine, nib.load(str(src)).affine, atol=1e-5)


def test_zscore_maps_background_and_block_to_the_hand_computed_values():
    """The threshold used above lies between what medcl's z-score makes of 0 and 100
    (f = 70/1800: background -sqrt(f/(1-f)) = -0.2012, block sqrt((1-f)/f) = 4.9713)."""
    norm = normalize_intensity(_block_volume()[..., None], PreprocessConfig())[..., 0]
    assert norm[0, 0, 0] == pytest.approx(-0.2012, abs=1e-4)
    assert norm[BLOCK].min() == norm[BLOCK].max() == pytest.approx(4.9713, abs=1e-4)
    assert _zscore_midpoint(70 / 1800) == pytest.approx((4.9713 - 0.2012) / 2, abs=1e-4)


def _mscmr_like(tmp_path):
    """float32 image with qform code 1, sform code 0 and a left-handed affine (qfac -1)."""
    c, s = np.cos(0.2), np.sin(0.2)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-1.25, 1.25, 10.0])
    affine[:3, 3] = (100.0, -50.0, 3.0)
    data = np.zeros((24, 20, 3), np.float32)
    data[6:14, 4:12, :2] = 100.0
    img = nib.Nifti1Image(data, None)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    path = tmp_path / "in" / "subject1.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(img, str(path))
    return path


def _predict_mscmr_like(tmp_path):
    src = _mscmr_like(tmp_path)
    spec = LabelSpec(class_names=("background", "block"), label_values=(0, 1))
    predictor = Predictor(ThresholdNet(0.5), spec,
                          PreprocessConfig(target_spacing=1.0, normalization="minmax"))
    out, = predict_path(src, tmp_path / "out", predictor)
    return nib.load(str(src)).header, nib.load(str(out)).header


def test_output_keeps_the_qform_qfac_and_zooms_of_an_mscmr_style_header(tmp_path):
    hin, hout = _predict_mscmr_like(tmp_path)
    assert hin["pixdim"][0] == -1 and int(hin["qform_code"]) == 1  # the input is as intended
    qin, qin_code = hin.get_qform(coded=True)
    qout, qout_code = hout.get_qform(coded=True)
    assert qout_code == qin_code == 1
    np.testing.assert_array_equal(qout, qin)
    np.testing.assert_array_equal(hout["pixdim"], hin["pixdim"])  # qfac -1 and zooms
    assert hout.get_zooms() == hin.get_zooms() == (1.25, 1.25, 10.0)
    for field in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
                  "xyzt_units", "dim"):
        np.testing.assert_array_equal(hout[field], hin[field], err_msg=field)


def test_output_sets_sform_code_1_from_the_qform_where_the_input_had_sform_code_0(tmp_path):
    """Today's behaviour (io.save_nifti: ``sform_code or 1``): an input with sform code 0 gets
    an output with sform code 1 whose matrix is the input's (qform) affine, float32-rounded.
    The geometry (best affine) is unchanged."""
    hin, hout = _predict_mscmr_like(tmp_path)
    assert hin.get_sform(coded=True) == (None, 0)
    sform, code = hout.get_sform(coded=True)
    assert code == 1
    np.testing.assert_allclose(sform, hin.get_qform(), atol=1e-6)
    np.testing.assert_allclose(hout.get_best_affine(), hin.get_best_affine(), atol=1e-6)


class NearestValueNet(nn.Module):
    """Logit of class k = -100 (intensity - k)^2: the class whose index equals the intensity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.arange(4, dtype=x.dtype).view(1, 4, 1, 1)
        return -100.0 * (x[:, :1] - k) ** 2


def test_label_values_200_500_600_are_written_as_exact_uint16(tmp_path):
    data = np.zeros((12, 10, 2), np.float32)
    data[1:4, 1:5, 0] = 1
    data[6:10, 2:8, :] = 2
    data[2:5, 7:9, 1] = 3
    src = write_nifti(tmp_path / "in" / "myops.nii.gz", data, spacing=(1.0, 1.0, 5.0))
    spec = LabelSpec(class_names=("background", "scar", "edema", "myo"),
                     label_values=(0, 200, 500, 600))
    predictor = Predictor(NearestValueNet(), spec,
                          PreprocessConfig(normalization="none", clip_percentiles=None))
    out, = predict_path(src, tmp_path / "out", predictor)
    img = nib.load(str(out))
    assert img.header.get_data_dtype() == np.uint16
    raw = np.asanyarray(img.dataobj)
    assert raw.dtype == np.uint16
    expected = np.choose(data.astype(int), [0, 200, 500, 600]).astype(np.uint16)
    np.testing.assert_array_equal(raw, expected)
    assert sorted(np.unique(raw).tolist()) == [0, 200, 500, 600]


@pytest.mark.parametrize("values, dtype", [((0, 1, 2, 3), np.uint8), ((0, 255), np.uint8),
                                           ((0, 256), np.uint16), ((0, 200, 500, 600), np.uint16),
                                           ((0, 65535), np.uint16), ((0, 65536), np.int32)])
def test_label_dtype_is_the_smallest_that_holds_the_top_value(values, dtype):
    names = tuple(f"c{i}" for i in range(len(values)))
    assert label_dtype(LabelSpec(class_names=names, label_values=values)) is dtype


@pytest.mark.parametrize("nonzero_mask", [False, True])
def test_label_volume_equals_the_argmax_of_the_whole_volume(tmp_path, nonzero_mask):
    """Labelling batch by batch (batch 2 of 5 slices, resampled 1 x 2 mm -> 0.8 mm) gives the
    argmax of the whole volume's probabilities, voxel for voxel, with and without the mask."""
    rng = np.random.default_rng(0)
    data = np.zeros((30, 20, 5), dtype=np.float32)
    data[3:27, 2:18] = rng.normal(5, 2, (24, 16, 5))
    path = write_nifti(tmp_path / "x.nii.gz", data, spacing=(1.0, 2.0, 5.0))
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, num_classes=3, widths=[4, 8])
    predictor = Predictor(model, LabelSpec(class_names=("bg", "a", "b"), label_values=(0, 1, 2),
                                           ignore_value=3, channel_names=("x",)),
                          PreprocessConfig(target_spacing=0.8, nonzero_mask=nonzero_mask),
                          batch_size=2)
    image = load_image([path])
    whole = predictor.predict_volume(image).argmax(-1)
    assert np.array_equal(predictor.label_volume(image), whole)
    assert len(np.unique(whole)) > 1  # the check is not on a constant map
