"""Checkpoint selection on the post-processed validation score (#42): the rule by hand, a
scripted run whose raw and post-processed scores peak at different steps, agreement of
best.pt and postprocessing.json, and exact resume."""

import json

import numpy as np
import pytest
import torch
from conftest import interrupt_and_resume, tiny_config

import medcl.training.trainer as trainer_module
from medcl.data.labels import LabelSpec
from medcl.errors import ConfigError
from medcl.inference.postprocessing import Postprocessing, read_postprocessing
from medcl.inference.predictor import Predictor
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.training.config import TrainConfig
from medcl.training.postprocessing_choice import Search, search_postprocessing
from medcl.training.run import train
from medcl.training.run_folder import SELECTION_NAME
from medcl.training.selection import Candidate, Selection, Validation
from medcl.training.validation import predict_cases, score

SPEC = LabelSpec.from_dict({"labels": {"background": 0, "a": 1, "b": 2}})


def _candidates():
    """Raw peaks at step 200 (0.70), post-processed at step 400 (0.78)."""
    return [Candidate(200, 0.70, 0.72), Candidate(400, 0.65, 0.78), Candidate(600, 0.60, 0.75)]


@pytest.mark.parametrize("rule, kept", [("post", 400), ("raw", 200)])
def test_rule_by_hand(rule, kept):
    selection = Selection(rule)
    improved = [selection.update(c) for c in _candidates()]
    assert selection.kept.step == kept
    assert improved == [True, rule == "post", False]
    assert selection.record() == {
        "rule": rule, "kept": selection.kept.scores(),
        "post": {"step": 400, "raw": 0.65, "post": 0.78},
        "raw": {"step": 200, "raw": 0.70, "post": 0.72}}


def test_a_checkpoint_from_before_keeps_its_raw_best():
    selection = Selection("post")
    selection.restore({"best": 0.5, "best_step": 200})
    assert selection.best["raw"] == Candidate(200, 0.5) and selection.kept is None
    assert selection.update(Candidate(400, 0.4, 0.45))  # the first post-processed score wins
    assert selection.best["raw"].step == 200  # 0.4 < 0.5 raw


def test_config_rule_default_and_check():
    assert TrainConfig().selection == "post"
    assert TrainConfig(postprocessing="none").selection == "raw"
    assert TrainConfig(selection="raw").selection == "raw"
    with pytest.raises(ConfigError, match="selection='post' .* needs postprocessing='auto'"):
        TrainConfig(selection="post", postprocessing="none")
    with pytest.raises(ConfigError, match="selection='best' is not valid; choose from post, raw"):
        TrainConfig(selection="best")


def test_search_scores_what_its_choice_writes():
    """Each greedy step runs on the label maps of the choice so far; the score it reports must
    be that of ``choice.apply`` on the raw maps. By hand, on a 20 x 20 slice (twice):
    class a rows 6-9 and b rows 10-13, columns 3-16; the prediction adds a frame of b on rows
    0-1 (the centre 0.8 box, rows 2-17, drops it; 0.65, rows 3-16, ties and the first is kept),
    an island of a at (4, 10) (the largest foreground drops it) and a voxel of a at (14, 8)
    that touches b but no a (the largest component of a drops it)."""
    reference = np.zeros((20, 20, 2), dtype=np.uint8)
    reference[6:10, 3:17] = 1
    reference[10:14, 3:17] = 2
    pred = reference.copy()
    pred[0:2] = 2
    pred[4, 10] = 1
    pred[14, 8] = 1
    search = search_postprocessing({"c": pred}, {"c": reference}, SPEC)
    assert search.choice == Postprocessing(largest_foreground=True, largest_per_class=(1,),
                                           centre_fraction=0.8)
    assert search.tried["centre 0.65"] == search.tried["centre 0.8"]
    assert search.summary["mean_dice"] == search.tried["chosen"] == pytest.approx(1.0)
    assert score({"c": search.choice.apply(pred)}, {"c": reference}, SPEC) == search.summary


#: step -> (raw score, post-processed score, the post-processing chosen on that validation):
#: raw peaks at step 2, post-processed at step 4
SCRIPT = {2: (0.60, 0.62, Postprocessing()),
          4: (0.50, 0.80, Postprocessing(largest_foreground=True)),
          6: (0.55, 0.70, Postprocessing(centre_fraction=0.8))}


def _scripted_validations(monkeypatch):
    """Replace the trainer's validation by :data:`SCRIPT`, one entry per validation in order."""
    steps = iter(sorted(SCRIPT))

    def summary(value):
        return {"mean_dice": value, "dice": {"RV": value, "Myo": value, "LV": value}}

    def fake(predictor, cases, *, search):
        raw, post, choice = SCRIPT[next(steps)]
        found = Search(choice, {"raw": raw, "chosen": post}, summary(post)) if search else None
        return Validation(summary(raw), found, 0.0, 0.0)

    monkeypatch.setattr(trainer_module, "validate_checkpoint", fake)


@pytest.mark.parametrize("rule, kept", [("post", 4), ("raw", 2)])
def test_run_keeps_the_checkpoint_its_rule_scores_best(rule, kept, tiny_dataset, tmp_path,
                                                       monkeypatch):
    _scripted_validations(monkeypatch)
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, val_interval=2, selection=rule), run)
    assert load_checkpoint(checkpoint_path(run, "best"))["step"] == kept
    raw, post, choice = SCRIPT[kept]
    assert json.loads((run / SELECTION_NAME).read_text()) == {
        "rule": rule, "kept": {"step": kept, "raw": raw, "post": post},
        "raw": {"step": 2, "raw": 0.60, "post": 0.62},
        "post": {"step": 4, "raw": 0.50, "post": 0.80}}
    # postprocessing.json: what the kept checkpoint's validation chose
    names = ("background", "RV", "Myo", "LV")
    assert read_postprocessing(run, names) == choice
    assert json.loads((run / "postprocessing.json").read_text())["step"] == kept
    vals = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    vals = [r for r in vals if r["event"] == "val"]
    assert [(r["step"], r["mean_dice_raw"], r["mean_dice_post"]) for r in vals] == [
        (s, raw_s, post_s) for s, (raw_s, post_s, _) in sorted(SCRIPT.items())]
    assert [r["mean_dice"] for r in vals] == [r[f"mean_dice_{rule}"] for r in vals]


def test_best_and_postprocessing_agree(tiny_dataset, tmp_path):
    """No script: best.pt predicts the validation cases again, and the post-processing chosen
    on its label maps is the stored one, with the scores selection.json records."""
    from medcl.training.data import load_run_validation

    run = tmp_path / "run"
    cfg = tiny_config(tiny_dataset)
    train(cfg, run)
    kept = json.loads((run / SELECTION_NAME).read_text())["kept"]
    assert load_checkpoint(checkpoint_path(run, "best"))["step"] == kept["step"]
    stored = json.loads((run / "postprocessing.json").read_text())
    assert stored["step"] == kept["step"]
    predictor = Predictor.from_run(run, device="cpu", precision="fp32", postprocessing="none")
    search = search_postprocessing(*predict_cases(predictor, load_run_validation(cfg)),
                                   predictor.spec)
    assert read_postprocessing(run, predictor.spec.class_names) == search.choice
    assert search.summary["mean_dice"] == pytest.approx(kept["post"])
    assert search.tried["raw"] == pytest.approx(kept["raw"])


def test_resume_keeps_the_selection(tiny_dataset, tmp_path, monkeypatch):
    """Scripted scores, interrupted after the validation of step 4 (the post-processed peak)
    and resumed: step 6 (lower) must not replace it, so the selection state travels in the
    checkpoint; best.pt, selection.json and postprocessing.json equal an uninterrupted run's."""
    cfg = tiny_config(tiny_dataset, val_interval=2)
    _scripted_validations(monkeypatch)
    train(cfg, tmp_path / "straight")
    _scripted_validations(monkeypatch)  # one script across the interrupted and resumed parts
    interrupt_and_resume(cfg, tmp_path / "resumed", 4)
    for name in (SELECTION_NAME, "postprocessing.json"):
        assert ((tmp_path / "straight" / name).read_text()
                == (tmp_path / "resumed" / name).read_text()), name
    straight, resumed = (load_checkpoint(checkpoint_path(tmp_path / r, "best"))
                         for r in ("straight", "resumed"))
    assert straight["step"] == resumed["step"] == 4
    assert straight["selection"] == resumed["selection"]
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
