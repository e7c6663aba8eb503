"""Overlay PNGs: files, size, orientation and colours."""

import numpy as np
import pytest
from PIL import Image

from medcl.evaluation.overlay import PALETTE, PRED_ALPHA, pick_slices, save_overlays

SHAPE = (8, 5, 4)  # X != Y so a transposition error shows in the PNG size
CLASSES = {"background": 0, "LV": 3, "Myo": 7}


def volumes():
    image = np.zeros(SHAPE, np.float32)  # constant: windowed to black
    pred, gt = np.zeros(SHAPE, np.int64), np.zeros(SHAPE, np.int64)
    pred[1:4, 1:4, 2] = 3
    gt[1:6, 0:5, 2] = 3     # 25 foreground voxels in slice 2
    gt[6, 1, 1] = 7         # 1 voxel in slice 1
    return image, pred, gt


def test_writes_pngs_of_the_fullest_ground_truth_slices(tmp_path):
    image, pred, gt = volumes()
    paths = save_overlays(image, pred, gt, tmp_path / "png", "case1", CLASSES, num_slices=2)
    assert [p.name for p in paths] == ["case1_z001.png", "case1_z002.png"]
    for path in paths:
        with Image.open(path) as png:
            assert png.size == (SHAPE[0], SHAPE[1])  # width X, height Y
            assert png.mode == "RGB"
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [p.name for p in paths]


def test_prediction_tint_and_ground_truth_contour(tmp_path):
    image, pred, gt = volumes()
    (path,) = save_overlays(image, pred, gt, tmp_path, "c", CLASSES, num_slices=1)
    lv_colour = PALETTE[0]  # first foreground class in class_values order
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB"))
    # voxel (x=2, y=2) is predicted LV and inside the ground truth: translucent tint on black
    tint = tuple(round(PRED_ALPHA * c) for c in lv_colour)
    assert tuple(rgb[2, 2]) == tint  # rows are Y, columns are X
    # voxel (x=1, y=0) is on the ground-truth contour, outside the prediction
    assert tuple(rgb[0, 1]) == lv_colour
    # voxel (x=7, y=4) is neither: image black
    assert tuple(rgb[4, 7]) == (0, 0, 0)


def test_slice_choice_falls_back_to_prediction_then_even_spacing():
    _, pred, gt = volumes()
    assert pick_slices(1, SHAPE[2], None, pred, [3, 7]) == [2]
    assert pick_slices(3, SHAPE[2], np.zeros(SHAPE, int), pred, [3, 7])[-1] == 2
    assert pick_slices(3, 4, None, None, [3]) == [0, 2, 3]
    assert pick_slices(9, 4, None, None, [3]) == [0, 1, 2, 3]


def test_image_only_and_grayscale_window(tmp_path):
    image = np.broadcast_to(np.arange(SHAPE[0], dtype=np.float32)[:, None, None], SHAPE)
    (path,) = save_overlays(image, None, None, tmp_path, "img", CLASSES, num_slices=1)
    with Image.open(path) as png:
        row = np.asarray(png.convert("RGB"))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255  # 1-99 percentile window, clipped
    assert np.all(np.diff(row.astype(int)) >= 0)


def test_invalid_arguments(tmp_path):
    image, pred, _ = volumes()
    with pytest.raises(ValueError, match="num_slices"):
        save_overlays(image, pred, None, tmp_path, "c", CLASSES, num_slices=0)
    with pytest.raises(ValueError, match="pred shape"):
        save_overlays(image, pred[:, :, :2], None, tmp_path, "c", CLASSES)
    with pytest.raises(ValueError, match="image must be"):
        save_overlays(image[:, :, 0], None, None, tmp_path, "c", CLASSES)
