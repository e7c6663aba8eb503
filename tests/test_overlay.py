"""Overlay PNGs: size, legend, orientation, colours and the choice of slices."""

import numpy as np
import pytest
from PIL import Image

from medcl.evaluation.display import MIN_LONG_SIDE, display_layout
from medcl.evaluation.overlay import (
    PALETTE,
    PNG_LEGEND_BOX,
    PNG_PANEL_BOX,
    PNG_TITLE,
    PRED_ALPHA,
    ROLE_FOREGROUND,
    ROLE_WORST,
    choose_slices,
    pick_slices,
    save_overlays,
    worst_dice_slice,
)

SHAPE = (8, 5, 4)  # X != Y so a transposition error shows in the PNG size
CLASSES = {"background": 0, "LV": 3, "Myo": 7}
LV, MYO = PALETTE[0], PALETTE[1]  # palette colours in class_values order
RAS = np.eye(4)                   # voxel axes point to the patient's Right, Anterior, Superior
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxel axes point Left, Posterior, Superior


def volumes():
    image = np.zeros(SHAPE, np.float32)  # constant: windowed to black
    pred, gt = np.zeros(SHAPE, np.int64), np.zeros(SHAPE, np.int64)
    pred[1:4, 1:4, 2] = 3
    gt[1:6, 0:5, 2] = 3     # 25 foreground voxels in slice 2
    gt[6, 1, 1] = 7         # 1 voxel in slice 1
    return image, pred, gt


def read(path):
    """RGB array, the panel and legend boxes (left, top, right, bottom) and the title."""
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB"))
        text = dict(png.text)
    boxes = [tuple(int(v) for v in text[key].split(",")) for key in (PNG_PANEL_BOX, PNG_LEGEND_BOX)]
    return rgb, boxes[0], boxes[1], text[PNG_TITLE]


def crop(rgb, box):
    left, top, right, bottom = box
    return rgb[top:bottom, left:right]


def count(rgb, colour):
    return int(np.all(rgb == np.asarray(colour, np.uint8), axis=-1).sum())


def test_readable_size_with_square_millimetres(tmp_path):
    image, pred, gt = volumes()
    (path,) = save_overlays(image, None, gt, tmp_path, "c", CLASSES, affine=RAS)
    rgb, panel, _, _ = read(path)
    # axial RAS slice: columns run along X (8 mm), rows along Y (5 mm); long side 512 px
    assert crop(rgb, panel).shape[:2] == (320, MIN_LONG_SIDE)
    assert rgb.shape[1] == MIN_LONG_SIDE
    # 2 mm voxels along Y make Y the long side: 10 mm -> 512 px, 8 mm -> 410 px
    (path,) = save_overlays(image, None, gt, tmp_path, "d", CLASSES,
                            affine=np.diag([1.0, 2.0, 1.0, 1.0]))
    rgb, panel, _, _ = read(path)
    assert crop(rgb, panel).shape[:2] == (MIN_LONG_SIDE, 410)


def test_legend_shows_each_class_colour(tmp_path):
    image, pred, gt = volumes()
    (path, *_) = save_overlays(image, pred, gt, tmp_path, "c", CLASSES, affine=RAS)
    rgb, _, legend, _ = read(path)
    swatches = crop(rgb, legend)
    assert count(swatches, LV) >= 16 * 16 and count(swatches, MYO) >= 16 * 16
    assert count(swatches, PALETTE[2]) == 0  # only two classes: no third colour
    # without the Myo class, its colour is gone from the legend
    (path, *_) = save_overlays(image, pred, gt, tmp_path / "lv", "c", {"LV": 3}, affine=RAS)
    rgb, _, legend, _ = read(path)
    assert count(crop(rgb, legend), MYO) == 0 and count(crop(rgb, legend), LV) >= 16 * 16


def centroid(mask):
    rows, cols = np.nonzero(mask)
    return rows.mean() / mask.shape[0], cols.mean() / mask.shape[1]


@pytest.mark.parametrize("affine, where", [
    (RAS, "top left"),       # patient right-anterior: right on the screen's left, anterior up
    (LPS, "bottom right"),   # the same voxels are patient left-posterior
    (np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "top left"),
])
def test_radiological_orientation(tmp_path, affine, where):
    """An asymmetric L-shaped blob at high X and high Y lands where the affine says."""
    shape = (40, 30, 3)
    image, gt = np.zeros(shape, np.float32), np.zeros(shape, np.int64)
    gt[28:36, 20:28, 1] = 3    # a square near high X, high Y ...
    gt[28:36, 10:20, 1] = 3    # ... with an arm towards low Y: an L
    (path,) = save_overlays(image, gt, None, tmp_path, "c", {"LV": 3}, affine=affine)
    rgb, panel, _, _ = read(path)
    tint = tuple(round(PRED_ALPHA * c) for c in LV)
    row, col = centroid(np.all(crop(rgb, panel) == tint, axis=-1))
    vertical, horizontal = where.split()
    assert (row < 0.5) == (vertical == "top")
    assert (col < 0.5) == (horizontal == "left")


def test_edge_letters_follow_the_affine():
    assert display_layout(RAS).edges == ("A", "P", "R", "L")
    assert display_layout(np.diag([1.0, 1.0, 1.0, 1.0])[[0, 2, 1, 3]]).edges == ("S", "I", "R", "L")


def test_prediction_tint_and_ground_truth_contour(tmp_path):
    image, pred, gt = volumes()
    paths = save_overlays(image, pred, gt, tmp_path, "c", CLASSES, affine=RAS)
    rgb, panel, _, title = read(paths[-1])  # slice 2, the one with the most foreground
    assert "c" in title and "z=2" in title and ROLE_FOREGROUND in title
    # Dice of LV on slice 2: 2 * 9 / (9 + 25)
    assert f"LV {2 * 9 / 34:.3f}" in title
    image_px = crop(rgb, panel)
    tint = tuple(round(PRED_ALPHA * c) for c in LV)  # prediction fill on a black image
    assert count(image_px, tint) > 0 and count(image_px, LV) > 0  # fill and contour
    # the voxel (x=7, y=4) is neither predicted nor labelled: black; with RAS it is shown top-left
    assert tuple(image_px[5, 5]) == (0, 0, 0)


def test_slices_most_foreground_plus_worst_dice(tmp_path):
    image, pred, gt = volumes()
    # slice 2 has the most ground truth (25 voxels, LV Dice 18/34); slice 1 holds one Myo voxel
    # that is not predicted (Dice 0): the worst
    assert worst_dice_slice(pred, gt, [3, 7]) == 1
    assert choose_slices(1, pred, gt, [3, 7], SHAPE[2]) == {1: ROLE_WORST, 2: ROLE_FOREGROUND}
    assert choose_slices(2, pred, gt, [3, 7], SHAPE[2]) == {
        1: f"{ROLE_FOREGROUND}, {ROLE_WORST}", 2: ROLE_FOREGROUND}
    paths = save_overlays(image, pred, gt, tmp_path / "png", "case1", CLASSES, affine=RAS)
    assert [p.name for p in paths] == ["case1_z001.png", "case1_z002.png"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [p.name for p in paths]
    assert worst_dice_slice(pred, np.zeros(SHAPE, int), [3]) == 2  # predicted, not labelled
    assert worst_dice_slice(np.zeros(SHAPE, int), np.zeros(SHAPE, int), [3]) is None


def test_slice_choice_falls_back_to_prediction_then_even_spacing():
    _, pred, gt = volumes()
    assert pick_slices(1, SHAPE[2], None, pred, [3, 7]) == [2]
    assert pick_slices(3, SHAPE[2], np.zeros(SHAPE, int), pred, [3, 7])[-1] == 2
    assert pick_slices(3, 4, None, None, [3]) == [0, 2, 3]
    assert pick_slices(9, 4, None, None, [3]) == [0, 1, 2, 3]


def test_image_only_and_grayscale_window(tmp_path):
    image = np.broadcast_to(np.arange(SHAPE[0], dtype=np.float32)[:, None, None], SHAPE)
    (path,) = save_overlays(image, None, None, tmp_path, "img", CLASSES, affine=RAS)
    rgb, panel, _, _ = read(path)
    row = crop(rgb, panel)[panel[3] // 4, :, 0].astype(int)
    # X increases towards the patient's right, shown on the screen's left: bright on the left
    assert row[0] == 255 and row[-1] == 0  # 1-99 percentile window, clipped
    assert np.all(np.diff(row) <= 0)


def test_invalid_arguments(tmp_path):
    image, pred, _ = volumes()
    with pytest.raises(ValueError, match="num_slices"):
        save_overlays(image, pred, None, tmp_path, "c", CLASSES, num_slices=0)
    with pytest.raises(ValueError, match="pred shape"):
        save_overlays(image, pred[:, :, :2], None, tmp_path, "c", CLASSES)
    with pytest.raises(ValueError, match="image must be"):
        save_overlays(image[:, :, 0], None, None, tmp_path, "c", CLASSES)


def test_long_titles_and_legends_wrap_inside_the_image(tmp_path):
    """Eight classes with long names on a narrow slice: the PNG is widened, the title wraps,
    every colour shows in the legend."""
    shape = (4, 30, 2)  # 4 x 30 voxels: the slice is about 68 px wide at 512 px high
    classes = {f"a long class name {i}": i + 1 for i in range(8)}
    gt = np.zeros(shape, np.int64)
    gt[:, :8, 1] = np.arange(1, 9)[None, :]  # every class present on slice 1
    image = np.zeros(shape, np.float32)
    paths = save_overlays(image, gt, gt, tmp_path, "c", classes, affine=RAS)
    rgb, panel, legend, title = read(paths[0])
    assert rgb.shape[1] == MIN_LONG_SIDE and panel[2] - panel[0] == 68  # centred slice
    assert title.count("1.000") == 8  # every class's Dice, though the line had to wrap
    assert panel[1] > 2 * 16  # the title band grew beyond two lines of text
    for colour in PALETTE:
        assert count(crop(rgb, legend), colour) >= 16 * 16
