"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from medcl.evaluation.metrics import (
    GT_EMPTY,
    HD95_MONAI,
    PRED_EMPTY,
    assd,
    binary_metrics,
    case_metrics,
    dice,
    empty_mask_flags,
    hd95,
    surface,
    surface_distances,
    volume_diagonal,
)


def line_pair(shape=(10, 5, 5)):
    """Two 3-voxel lines along X, the prediction one voxel before the ground truth."""
    pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
    pred[2:5, 2, 2] = True  # x = 2, 3, 4
    gt[3:6, 2, 2] = True    # x = 3, 4, 5
    return pred, gt


def test_dice_known_overlaps():
    pred, gt = line_pair()
    assert dice(pred, gt) == pytest.approx(2 * 2 / 6)
    a, b = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    a.flat[:4] = True
    b.flat[1:7] = True  # overlap 3, sizes 4 and 6
    assert dice(a, b) == pytest.approx(0.6)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_shifted_lines_anisotropic_spacing():
    pred, gt = line_pair()
    # every voxel of a 1-voxel-thick line is a surface voxel; the outer ends are 2 mm off
    to_gt, to_pred = surface_distances(pred, gt, (2.0, 1.0, 1.0))
    np.testing.assert_allclose(np.sort(to_gt), [0, 0, 2])
    np.testing.assert_allclose(np.sort(to_pred), [0, 0, 2])
    # pooled [0, 0, 0, 0, 2, 2]: p95 at position 4.75, between two 2s
    assert hd95(pred, gt, (2.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert assd(pred, gt, (2.0, 1.0, 1.0)) == pytest.approx(4 / 6)
    # spacing is per axis: the same value on the Z axis does not affect a shift along X
    assert hd95(pred, gt, (1.0, 1.0, 2.0)) == pytest.approx(1.0)
    # spacing across the shift plays no role for lines on the same row
    assert hd95(pred, gt, (2.0, 7.0, 3.0)) == pytest.approx(2.0)


def test_spacing_scales_distances():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((8, 7, 6)) > 0.6, rng.random((8, 7, 6)) > 0.6
    base = binary_metrics(pred, gt, (1.0, 1.0, 1.0))
    scaled = binary_metrics(pred, gt, (3.0, 3.0, 3.0))
    assert scaled["dice"] == base["dice"]
    assert scaled["hd95"] == pytest.approx(3 * base["hd95"])
    assert scaled["assd"] == pytest.approx(3 * base["assd"])


def test_surface_is_face_connected_and_border_counts_as_outside():
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert surface(cube).sum() == 26  # all but the centre voxel
    # the array border is outside: a full array has the same surface as a padded cube
    # (with the border inside it would have none)
    assert surface(np.ones((3, 3, 3), bool)).sum() == 26


def test_conventions_pinned_on_asymmetric_sets():
    """medpy's conventions: pooled p95 and the mean of the two directed means."""
    pred, gt = np.zeros((20, 3, 3), bool), np.zeros((20, 3, 3), bool)
    pred[0:2, 1, 1] = True  # distances to gt: [0, 0]
    gt[:, 1, 1] = True      # distances to pred: [0, 0, 1, 2, ..., 18]
    # pooled 22 distances, sorted 0,0,0,0,1,...,18: p95 at position 19.95, between 16 and 17
    assert hd95(pred, gt, (1, 1, 1)) == pytest.approx(16.95)
    # MONAI: directed p95s are 0 (of [0, 0]) and 17.05 (of the 20 gt distances, position 18.05)
    assert hd95(pred, gt, (1, 1, 1), convention=HD95_MONAI) == pytest.approx(17.05)
    # directed means 0 and 171 / 20
    assert assd(pred, gt, (1, 1, 1)) == pytest.approx((0 + sum(range(19)) / 20) / 2)


def test_hd95_conventions_differ_by_hand():
    """A prediction 2 voxels short of a ground-truth line: pooled vs max of directed p95."""
    pred, gt = np.zeros((1, 14, 1), bool), np.zeros((1, 14, 1), bool)
    pred[0, 0:10, 0] = True  # one voxel thick: every voxel is a surface voxel
    gt[0, 0:12, 0] = True
    spacing = (1.0, 2.0, 1.0)
    # pred -> gt: ten 0s. gt -> pred: ten 0s, then 2 mm and 4 mm (y = 10, 11).
    # medpy pools the 22 distances: twenty 0s, 2, 4; p95 at position 0.95 * 21 = 19.95,
    #   between sorted[19] = 0 and sorted[20] = 2 -> 0.95 * 2 = 1.9 mm
    assert hd95(pred, gt, spacing) == pytest.approx(1.9)
    # MONAI takes the larger directed p95: of gt -> pred (12 values) at position 0.95 * 11 =
    #   10.45, between sorted[10] = 2 and sorted[11] = 4 -> 2.9 mm; of pred -> gt: 0
    assert hd95(pred, gt, spacing, convention="monai") == pytest.approx(2.9)
    assert binary_metrics(pred, gt, spacing, hd95_convention="monai")["hd95"] == pytest.approx(2.9)
    # the convention changes HD95 only
    medpy = binary_metrics(pred, gt, spacing)
    monai = binary_metrics(pred, gt, spacing, hd95_convention="monai")
    assert (medpy["dice"], medpy["assd"]) == (monai["dice"], monai["assd"])


def test_unknown_hd95_convention():
    pred, gt = line_pair()
    with pytest.raises(ValueError, match="unknown HD95 convention 'scipy'; choose one of medpy"):
        hd95(pred, gt, (1, 1, 1), convention="scipy")
    with pytest.raises(ValueError, match="unknown HD95 convention"):
        case_metrics(pred.astype(int), gt.astype(int), {"a": 1}, (1, 1, 1), hd95_convention="x")


def test_point_inside_cube():
    pred, gt = np.zeros((5, 5, 5), bool), np.zeros((5, 5, 5), bool)
    pred[2, 2, 2] = True
    gt[1:4, 1:4, 1:4] = True
    # gt surface: 6 face centres at 1, 12 edge centres at sqrt 2, 8 corners at sqrt 3
    # directed means: pred -> gt is 1 (one voxel), gt -> pred averages the 26 surface voxels
    expected = (1 + (6 + 12 * math.sqrt(2) + 8 * math.sqrt(3)) / 26) / 2
    assert assd(pred, gt, (1, 1, 1)) == pytest.approx(expected)
    assert hd95(pred, gt, (1, 1, 1)) == pytest.approx(math.sqrt(3))


def test_empty_mask_rule():
    shape, spacing = (4, 5, 6), (1.5, 1.5, 5.0)
    empty, full = np.zeros(shape, bool), np.zeros(shape, bool)
    full[1:3, 1:3, 1:3] = True
    diagonal = math.sqrt(6.0 ** 2 + 7.5 ** 2 + 30.0 ** 2)
    assert diagonal == pytest.approx(31.5)
    assert volume_diagonal(shape, spacing) == pytest.approx(31.5)
    assert binary_metrics(empty, empty, spacing) == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    for pred, gt in ((empty, full), (full, empty)):
        assert binary_metrics(pred, gt, spacing) == pytest.approx(
            {"dice": 0.0, "hd95": 31.5, "assd": 31.5})
        assert hd95(pred, gt, spacing) == pytest.approx(31.5)
        assert assd(pred, gt, spacing) == pytest.approx(31.5)
    assert dice(empty, empty) == 1.0
    with pytest.raises(ValueError, match="empty"):
        surface_distances(empty, full, spacing)


def test_case_metrics_per_class_and_flags(caplog):
    pred_labels, gt_labels = np.zeros((10, 5, 5), np.int64), np.zeros((10, 5, 5), np.int64)
    pred, gt = line_pair()
    pred_labels[pred], gt_labels[gt] = 200, 200
    gt_labels[0, 0, 0] = 500        # predicted absent
    pred_labels[9, 4, 4] = 600      # predicted but absent in the ground truth
    classes = {"Myo": 200, "LV": 500, "RV": 600, "scar": 700}
    res = case_metrics(pred_labels, gt_labels, classes, (2.0, 1.0, 1.0), case_id="s1")
    diagonal = volume_diagonal((10, 5, 5), (2.0, 1.0, 1.0))
    assert res["Myo"] == pytest.approx({"dice": 2 / 3, "hd95": 2.0, "assd": 2 / 3})
    assert res["LV"] == pytest.approx({"dice": 0.0, "hd95": diagonal, "assd": diagonal})
    assert res["RV"] == pytest.approx({"dice": 0.0, "hd95": diagonal, "assd": diagonal})
    assert res["scar"] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    assert empty_mask_flags(pred_labels, gt_labels, classes) == {"LV": PRED_EMPTY, "RV": GT_EMPTY}
    assert "case s1, class LV" in caplog.text


@pytest.mark.parametrize("kwargs, message", [
    ({"spacing": (1.0, 1.0)}, "3 values"),
    ({"spacing": (1.0, 0.0, 1.0)}, "positive"),
    ({"class_values": {"LV": 1.5}}, "non-integer"),
    ({"class_values": {}}, "at least one"),
    ({"class_values": {"a": 1, "b": 1}}, "not unique"),
])
def test_case_metrics_validates_options(kwargs, message):
    args = {"class_values": {"LV": 1}, "spacing": (1.0, 1.0, 1.0), **kwargs}
    labels = np.zeros((3, 3, 3), np.int64)
    with pytest.raises(ValueError, match=message):
        case_metrics(labels, labels, **args)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differs"):
        dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool))
    with pytest.raises(ValueError, match="differs"):
        case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), {"a": 1}, (1, 1, 1))
