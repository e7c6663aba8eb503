"""Connected-component post-processing and its choice on validation cases (nnU-Net's rule)."""

import json
import shutil

import numpy as np
import pytest

from medcl.data.labels import LabelSpec
from medcl.errors import DataError
from medcl.inference.postprocessing import (
    POSTPROCESSING_FILE,
    Postprocessing,
    keep_centre,
    keep_largest_foreground,
    read_postprocessing,
)
from medcl.training.postprocessing_choice import choose_postprocessing

NAMES = ("background", "a", "b")
SPEC = LabelSpec.from_dict({"labels": {"background": 0, "a": 1, "b": 2}})


def _heart_and_island():
    """A 2-class blob (classes 1 and 2 touching) and a far single-voxel island of class 1."""
    labels = np.zeros((10, 10, 3), dtype=np.uint8)
    labels[1:4, 1:4, 1] = 1
    labels[4:6, 1:4, 1] = 2  # touches class 1: one foreground component of 15 voxels
    labels[8, 8, 1] = 1  # the island
    return labels


def test_largest_foreground_keeps_the_touching_classes_and_drops_the_island():
    out = keep_largest_foreground(_heart_and_island())
    assert out[8, 8, 1] == 0
    assert (out == 1).sum() == 9 and (out == 2).sum() == 6


def test_largest_per_class_only_touches_the_listed_class():
    labels = _heart_and_island()
    labels[8, 8, 1] = 2  # the island is now class 2
    assert Postprocessing(largest_per_class=(1,)).apply(labels)[8, 8, 1] == 2
    assert Postprocessing(largest_per_class=(2,)).apply(labels)[8, 8, 1] == 0


def test_identity_is_a_copy_that_changes_nothing():
    labels = _heart_and_island()
    out = Postprocessing().apply(labels)
    assert Postprocessing().is_identity and np.array_equal(out, labels) and out is not labels


def test_file_round_trip_and_bad_names(tmp_path):
    choice = Postprocessing(largest_foreground=True, largest_per_class=(2,))
    assert choice.to_dict(NAMES) == {"centre_fraction": 1.0, "largest_foreground": True,
                                     "largest_per_class": ["b"]}
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps(choice.to_dict(NAMES)))
    assert read_postprocessing(tmp_path, NAMES) == choice
    assert read_postprocessing(tmp_path / "elsewhere", NAMES).is_identity  # no file: none
    (tmp_path / POSTPROCESSING_FILE).write_text(json.dumps({"largest_per_class": ["liver"]}))
    with pytest.raises(DataError,
                       match=r"postprocessing.json.*must be foreground classes \(a, b\)"):
        read_postprocessing(tmp_path, NAMES)


def test_choice_keeps_a_step_only_where_validation_dice_rises():
    reference = _heart_and_island()
    reference[8, 8, 1] = 0
    pred = _heart_and_island()  # the island is a false positive of class a
    choice, scores = choose_postprocessing({"c1": pred}, {"c1": reference}, SPEC)
    assert choice.largest_foreground
    # by hand: Dice a = 2*9/(10+9) = 0.947, b = 1 -> raw mean 0.974; without the island 1
    assert scores["raw"] == pytest.approx((18 / 19 + 1) / 2)
    assert scores["chosen"] == pytest.approx(1.0)
    assert choice.largest_per_class == ()  # nothing left to gain after the first step


def test_choice_leaves_structures_of_several_pieces_alone():
    """Two separate organs (say, the kidneys) in the reference: keeping the largest foreground
    would delete one, so validation refuses it."""
    reference = np.zeros((12, 12, 2), dtype=np.uint8)
    reference[1:4, 1:4, :] = 1
    reference[8:11, 8:11, :] = 2
    choice, scores = choose_postprocessing({"c1": reference.copy()}, {"c1": reference}, SPEC)
    assert choice.is_identity
    assert scores["largest foreground"] < scores["raw"] == pytest.approx(1.0)


def test_training_chooses_and_predict_applies_it(tiny_dataset, trained_run, tmp_path):
    from medcl.cli import main
    from medcl.inference.predictor import Predictor

    stored = json.loads((trained_run / POSTPROCESSING_FILE).read_text())
    assert set(stored["validation"]) >= {"raw", "largest foreground", "chosen"}
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    forced = Postprocessing(largest_foreground=True, largest_per_class=(1, 2, 3))
    from medcl.inference.postprocessing import write_postprocessing

    spec = Predictor.from_run(run, device="cpu", postprocessing="none").spec
    write_postprocessing(run, forced, spec.class_names, {})
    assert Predictor.from_run(run, device="cpu").postprocessing == forced
    assert Predictor.from_run(run, device="cpu", postprocessing="none").postprocessing.is_identity
    # medcl postprocess chooses again from the run's own validation cases
    assert main(["postprocess", str(run), "--device", "cpu"]) == 0
    assert json.loads((run / POSTPROCESSING_FILE).read_text())["validation"] == stored["validation"]


def test_postprocess_without_a_run_is_a_one_line_error(tmp_path, capsys):
    from medcl.cli import main

    assert main(["postprocess", str(tmp_path)]) == 2
    assert "config.json: no run in" in capsys.readouterr().err


def test_centre_box_by_hand():
    labels = np.ones((10, 7, 2), dtype=np.uint8)
    out = keep_centre(labels, 0.5)
    # X: int(10 * 0.25) = 2 -> rows 2..7; Y: int(7 * 0.25) = 1 -> columns 1..5
    assert out[:, :, 0].sum() == 6 * 5 and out[2:8, 1:6].all() and labels.all()


def test_choice_takes_the_centre_field_that_validation_prefers():
    """False positives in a border frame (air around the body) joined to nothing: the centre
    field removes them; the smallest candidate would cut the organ, so a larger one wins."""
    reference = np.zeros((20, 20, 2), dtype=np.uint8)
    reference[4:16, 4:16, :] = 1  # 0.5 keeps rows 5..14 only: it cuts the organ
    pred = reference.copy()
    pred[0:2, :, :] = 2  # a frame of class b along one border
    choice, scores = choose_postprocessing({"c1": pred}, {"c1": reference}, SPEC)
    # 0.8: start int(20 * 0.1) = 2 -> rows 2..17 keep the organ and drop the frame
    assert choice.centre_fraction == 0.8
    assert scores["centre 0.5"] < scores["centre 0.8"] == pytest.approx(1.0)
    assert Postprocessing.from_dict(choice.to_dict(NAMES), NAMES, source="x") == choice
