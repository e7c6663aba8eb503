"""Folder evaluation on tiny NIfTI files with hand-computed metrics."""

import json
import math

import nibabel as nib
import numpy as np
import pytest

from medcl.errors import ConfigError, DataError
from medcl.evaluation.evaluate import (
    evaluate_folders,
    format_markdown,
    pair_predictions,
)

SHAPE = (6, 6, 4)
SPACING = (1.5, 1.5, 5.0)
# flipped X and an offset: a non-identity affine with voxel size SPACING
AFFINE = np.array([[-1.5, 0, 0, 40.0], [0, 1.5, 0, -12.0], [0, 0, 5.0, 7.5], [0, 0, 0, 1]])
DIAGONAL = math.sqrt((6 * 1.5) ** 2 + (6 * 1.5) ** 2 + (4 * 5.0) ** 2)


def write(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def labels(*, class1=True, class2_z=None):
    out = np.zeros(SHAPE, np.int16)
    if class1:
        out[1:3, 1:3, 1] = 1
    if class2_z is not None:
        out[4, 4, class2_z] = 2
    return out


@pytest.fixture
def folders(tmp_path):
    """subject1: class 1 exact, class 2 shifted one slice (5 mm); subject2: class 2 missed."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write(gt / "subject1_DE_manual.nii.gz", labels(class2_z=slice(0, 2)))
    write(pred / "subject1_DE.nii.gz", labels(class2_z=slice(1, 3)))
    write(gt / "subject2_DE_manual.nii.gz", labels(class2_z=slice(0, 2)))
    write(pred / "subject2_DE.nii.gz", labels())
    return gt, pred


def test_summary_numbers_by_hand(folders, tmp_path):
    gt, pred = folders
    out = tmp_path / "out"
    summary = evaluate_folders(gt, pred, out_dir=out)
    assert summary["classes"] == {"class_1": 1, "class_2": 2}
    assert summary["num_cases"] == 2
    cases = summary["cases"]
    assert cases["subject1_DE"]["class_1"] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    # directed distances [0, 5] both ways: pooled [0, 0, 5, 5], p95 at 2.85 -> 5;
    # assd (2.5 + 2.5) / 2
    assert cases["subject1_DE"]["class_2"] == pytest.approx(
        {"dice": 0.5, "hd95": 5.0, "assd": 2.5})
    assert cases["subject2_DE"]["class_2"] == pytest.approx(
        {"dice": 0.0, "hd95": DIAGONAL, "assd": DIAGONAL})
    assert summary["mean"]["class_2"] == pytest.approx(
        {"dice": 0.25, "hd95": (5.0 + DIAGONAL) / 2, "assd": (2.5 + DIAGONAL) / 2})
    assert summary["std"]["class_2"]["dice"] == pytest.approx(0.25)
    assert summary["std"]["class_1"] == {"dice": 0.0, "hd95": 0.0, "assd": 0.0}
    # per case foreground Dice 0.75 and 0.5
    assert summary["mean_foreground_dice"] == pytest.approx(0.625)
    assert summary["overall"]["std"]["dice"] == pytest.approx(0.125)
    assert summary["flagged"] == [
        {"case": "subject2_DE", "class": "class_2", "reason": "prediction empty"}]
    assert "HD95" in summary["definitions"]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["cases"] == cases  # floats survive the JSON round trip
    assert on_disk["mean_foreground_dice"] == pytest.approx(0.625)
    markdown = (out / "summary.md").read_text()
    assert markdown == format_markdown(on_disk)
    assert "| class_2 | 0.250 ± 0.250 |" in markdown
    assert "| subject1_DE |" in markdown and "subject2_DE / class_2" in markdown


def test_class_names_from_option(folders):
    gt, pred = folders
    summary = evaluate_folders(gt, pred, class_values={"LV": 1, "Myo": 2})
    assert set(summary["mean"]) == {"LV", "Myo"}
    text = format_markdown(summary)
    for expected in ("| LV |", "| Myo |", "Mean (foreground)", "LV Dice", "Myo HD95 medpy (mm)"):
        assert expected in text


def test_pairing_by_case_id_prefix(folders):
    gt, pred = folders
    pairs = pair_predictions(gt, pred)
    assert [(c, p.name, g.name) for c, p, g in pairs] == [
        ("subject1_DE", "subject1_DE.nii.gz", "subject1_DE_manual.nii.gz"),
        ("subject2_DE", "subject2_DE.nii.gz", "subject2_DE_manual.nii.gz")]


def test_ground_truth_without_prediction(folders):
    gt, pred = folders
    write(gt / "subject3_DE_manual.nii.gz", labels())
    with pytest.raises(DataError, match="subject3_DE_manual.nii.gz: ground truth without"):
        evaluate_folders(gt, pred)


def test_prediction_without_ground_truth(folders):
    gt, pred = folders
    write(pred / "subject10_DE.nii.gz", labels())  # subject1_DE must not claim it
    with pytest.raises(DataError, match="subject10_DE.nii.gz: prediction without"):
        evaluate_folders(gt, pred)


def test_two_ground_truths_for_one_case(folders):
    gt, pred = folders
    write(gt / "subject1_DE_gt.nii.gz", labels())
    with pytest.raises(DataError, match="subject1_DE_manual.nii.gz: case 'subject1_DE'"):
        evaluate_folders(gt, pred)


def test_shape_mismatch_names_prediction(folders):
    gt, pred = folders
    write(pred / "subject2_DE.nii.gz", np.zeros((6, 6, 5), np.int16))
    with pytest.raises(DataError, match="subject2_DE.nii.gz: shape"):
        evaluate_folders(gt, pred)


def test_affine_mismatch_same_spacing_warns_and_is_recorded(folders, caplog):
    """A header that lost its orientation (same grid and spacing) is compared voxel by voxel."""
    gt, pred = folders
    write(pred / "subject1_DE.nii.gz", labels(), affine=np.diag([1.5, 1.5, 5.0, 1.0]))
    summary = evaluate_folders(gt, pred)
    assert summary["affine_mismatch"] == ["subject1_DE"]
    assert "subject1_DE.nii.gz: affine differs" in caplog.text


def test_affine_mismatch_with_other_spacing_names_prediction(folders):
    gt, pred = folders
    write(pred / "subject1_DE.nii.gz", labels(), affine=np.diag([1.0, 1.5, 5.0, 1.0]))
    with pytest.raises(DataError, match="subject1_DE.nii.gz: affine"):
        evaluate_folders(gt, pred)


def test_missing_folder(folders, tmp_path):
    gt, _ = folders
    with pytest.raises(DataError, match="nope: folder not found"):
        evaluate_folders(gt, tmp_path / "nope")


@pytest.mark.parametrize("kwargs, message", [
    ({"overlay_dir": "x"}, "both overlay_dir and image_dir"),
    ({"num_overlay_slices": 0}, "num_overlay_slices"),
    ({"hd95_convention": "max"}, "hd95_convention: unknown HD95 convention .max.; choose one"),
    ({"class_values": {"bg": 0}}, "foreground"),
    ({"class_values": {"LV": "one"}}, "non-integer"),
])
def test_invalid_options(folders, kwargs, message):
    gt, pred = folders
    with pytest.raises(ConfigError, match=message):
        evaluate_folders(gt, pred, **kwargs)


def test_overlays_for_cases_with_images(folders, tmp_path):
    gt, pred = folders
    images = tmp_path / "images"
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    write(images / "subject1_DE_0000.nii.gz", image)  # subject2 has no image: skipped
    overlay_dir = tmp_path / "png"
    summary = evaluate_folders(gt, pred, overlay_dir=overlay_dir, image_dir=images,
                               num_overlay_slices=2)
    # most ground-truth foreground: z = 1 (5 voxels), then z = 0 (1 voxel)
    assert summary["overlays"] == {"subject1_DE": ["subject1_DE_z000.png", "subject1_DE_z001.png"]}
    assert sorted(p.name for p in overlay_dir.glob("*.png")) == summary["overlays"]["subject1_DE"]


def test_overlay_image_geometry_checked(folders, tmp_path):
    gt, pred = folders
    images = tmp_path / "images"
    write(images / "subject1_DE.nii.gz", np.zeros((6, 6, 3), np.float32))
    with pytest.raises(DataError, match="subject1_DE.nii.gz: shape"):
        evaluate_folders(gt, pred, overlay_dir=tmp_path / "png", image_dir=images)


def test_grouped_dice_is_the_union_of_the_classes(folders):
    """subject1: union gt 6, pred 6 voxels, overlap 5 -> 10/12; subject2: 8/10 (class 2 missed)."""
    gt, pred = folders
    summary = evaluate_folders(gt, pred, groups={"Both": [1, 2], "Two": [2]})
    grouped = summary["groups"]
    assert grouped["cases"]["subject1_DE"]["Both"]["dice"] == pytest.approx(10 / 12)
    assert grouped["cases"]["subject2_DE"]["Both"]["dice"] == pytest.approx(0.8)
    assert grouped["mean"]["Two"]["dice"] == pytest.approx(0.25)
    assert grouped["mean_dice"] == pytest.approx(((10 / 12 + 0.8) / 2 + 0.25) / 2)
    assert summary["cases"]["subject1_DE"]["class_2"]["dice"] == pytest.approx(0.5)  # unchanged
    assert "Mean Dice of the groupings: 0.533" in format_markdown(summary)


def test_grouping_with_an_unknown_value(folders):
    gt, pred = folders
    with pytest.raises(ConfigError, match=r"grouping 'Edema' names values \[1220\]"):
        evaluate_folders(gt, pred, groups={"Edema": [1220, 2]})


def test_hd95_convention_recorded_and_applied(folders, tmp_path):
    gt, pred = folders
    medpy = evaluate_folders(gt, pred, out_dir=tmp_path / "medpy")
    monai = evaluate_folders(gt, pred, out_dir=tmp_path / "monai", hd95_convention="monai")
    saved = json.loads((tmp_path / "monai" / "summary.json").read_text())
    assert (medpy["hd95_convention"], saved["hd95_convention"]) == ("medpy", "monai")
    assert "directed 95th percentiles" in saved["definitions"]
    assert "HD95 monai (mm)" in (tmp_path / "monai" / "summary.md").read_text()
    # subject1, class 2: gt at z = 0, 1 and prediction at z = 1, 2 (5 mm slices), every voxel
    # a surface voxel. Directed distances: pred -> gt [0, 5], gt -> pred [5, 0].
    # medpy pools [0, 0, 5, 5]: p95 at position 2.85 -> 5; MONAI: p95 of [0, 5] = 4.75 each.
    # (Here the max of the directed percentiles is the smaller number.)
    assert medpy["cases"]["subject1_DE"]["class_2"]["hd95"] == pytest.approx(5.0)
    assert monai["cases"]["subject1_DE"]["class_2"]["hd95"] == pytest.approx(4.75)
    # Dice and ASSD do not depend on the convention
    for metric in ("dice", "assd"):
        assert monai["mean"]["class_2"][metric] == medpy["mean"]["class_2"][metric]
