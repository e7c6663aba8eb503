"""Outputs medcl owns: a record per output folder; ``--overwrite`` replaces or removes only
medcl's own files; ``convert`` owns its layout; what an nnU-Net ``dataset.json`` declares is
checked against its files (issue #36)."""

import json
import logging

import numpy as np
import pytest
from conftest import tiny_config, write_nifti

from medcl.cli import main
from medcl.data.convert import convert_to_nnunet
from medcl.data.datasets import discover
from medcl.data.synthetic import generate_dataset
from medcl.demo import _prepare_out
from medcl.errors import ConfigError, DataError
from medcl.evaluation.evaluate import evaluate_folders
from medcl.inference.predictor import Predictor, predict_path
from medcl.ownership import MANIFEST_NAME, OutputFolder
from medcl.training.run import train

SHAPE = (6, 6, 2)
SPEC = {"labels": {"background": 0, "LV": 1, "ignore": 2}, "channel_names": {"0": "MR"}}
#: generated datasets small enough to convert in a second
SMALL = {"shape": (64, 64, 2), "num_val": 1, "num_test": 1}


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_run(trained_run, device="cpu")


def _images(folder, names=("a", "b")):
    for name in names:
        write_nifti(folder / f"{name}.nii.gz", np.random.default_rng(0).random((40, 40, 2),
                                                                             np.float32))
    return folder


# -- the record (item 2) ------------------------------------------------------------------------
def test_check_refuses_a_file_medcl_did_not_write_even_with_overwrite(tmp_path):
    record = OutputFolder(tmp_path, "predict")
    mine, theirs = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    for path in (mine, theirs):
        path.write_bytes(b"x")
    record.record([mine])
    assert record.check([mine], overwrite=True) == [mine]
    with pytest.raises(DataError, match="a.nii.gz: output already exists .*; pass --overwrite"):
        record.check([mine], overwrite=False)
    with pytest.raises(DataError, match=r"b.nii.gz: exists and was not written by medcl \(it is "
                       r"not in .*\.medcl-outputs.jsonl\); medcl never replaces"):
        record.check([mine, theirs], overwrite=True)


def test_a_record_line_cut_by_a_kill_counts_as_not_medcls(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"x")
    OutputFolder(tmp_path, "predict").record([tmp_path / "a.nii.gz"])
    with (tmp_path / MANIFEST_NAME).open("a") as fh:
        fh.write('{"path": "../outside.txt"}\n{"path": "b.nii')  # an edited line; the kill
    OutputFolder(tmp_path, "predict").record([tmp_path / "c.nii.gz"])  # starts a new line
    again = OutputFolder(tmp_path, "predict")
    assert sorted(again.recorded()) == ["a.nii.gz", "c.nii.gz"]
    assert not again.owns(tmp_path / "b.nii.gz")


def test_release_removes_only_recorded_files_and_names_the_rest(tmp_path, caplog):
    own = [tmp_path / "a.nii.gz", tmp_path / "probs" / "a.nii.gz"]
    for path in own:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    record = OutputFolder(tmp_path, "predict")
    record.record(own)
    (tmp_path / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        assert record.release() == own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # probs/ and the record
    assert f"left 1 file(s) medcl did not write: {tmp_path / 'notes.txt'}" in caplog.text


# -- demo --overwrite, predict, evaluate, train, scribble (item 2) -------------------------------
def test_demo_overwrite_keeps_files_the_user_put_in_its_folders(predictor, tiny_dataset, tmp_path,
                                                                caplog):
    out, parts = tmp_path / "demo", ("data", "run", "predictions", "evaluation")
    images, labels = tiny_dataset / "TestSet" / "images", tiny_dataset / "TestSet" / "labels"
    _prepare_out(out, False, [], parts)
    predict_path(images, out / "predictions", predictor)
    evaluate_folders(labels, out / "predictions", out_dir=out / "evaluation", image_dir=images,
                     overlay_dir=out / "evaluation" / "overlays")
    (out / "predictions" / "notes.txt").write_text("mine")
    (out / "evaluation" / "overlays" / "figure.png").write_bytes(b"mine")
    with caplog.at_level(logging.WARNING):
        _prepare_out(out, True, [], parts)
    assert (out / "predictions" / "notes.txt").read_text() == "mine"
    assert (out / "evaluation" / "overlays" / "figure.png").read_bytes() == b"mine"
    assert not list((out / "predictions").glob("*.nii.gz"))
    assert not (out / "evaluation" / "summary.json").exists()
    assert not list((out / "evaluation" / "overlays").glob("*_z*.png"))
    assert "left 1 file(s) medcl did not write: " in caplog.text and "notes.txt" in caplog.text


def test_predict_overwrite_never_replaces_a_file_medcl_did_not_write(predictor, tmp_path):
    images, out = _images(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"my manual segmentation")
    with pytest.raises(DataError, match="a.nii.gz: exists and was not written by medcl"):
        predict_path(images, out, predictor, overwrite=True)
    assert (out / "a.nii.gz").read_bytes() == b"my manual segmentation"
    assert not (out / "b.nii.gz").exists()


def test_evaluate_never_replaces_a_summary_medcl_did_not_write(tmp_path):
    gt = np.zeros(SHAPE, np.uint8)
    gt[1:3, 1:3] = 1
    write_nifti(tmp_path / "gt" / "a.nii.gz", gt)
    write_nifti(tmp_path / "pred" / "a.nii.gz", gt)
    (tmp_path / "pred" / "summary.json").write_text("my own")
    with pytest.raises(DataError, match="summary.json: exists and was not written by medcl"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", out_dir=tmp_path / "pred")
    assert (tmp_path / "pred" / "summary.json").read_text() == "my own"
    for _ in range(2):  # its own summary is replaced
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", out_dir=tmp_path / "eval")


def test_train_never_writes_over_a_file_medcl_did_not_write(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("my notes\n")
    with pytest.raises(DataError, match="metrics.jsonl: exists and was not written by medcl"):
        train(tiny_config(tiny_dataset), run)
    assert (run / "metrics.jsonl").read_text() == "my notes\n"


# -- convert owns its output (item 1) -----------------------------------------------------------
def test_convert_overwrite_removes_its_stale_cases_and_keeps_other_files(tmp_path, caplog):
    first = generate_dataset(tmp_path / "first", num_train=3, seed=0, **SMALL)  # case01..05
    second = generate_dataset(tmp_path / "second", num_train=2, seed=1, **SMALL)  # case01..04
    out = tmp_path / "nnunet"
    convert_to_nnunet(first, out)
    (out / "README.txt").write_text("my notes")
    with caplog.at_level(logging.WARNING):
        convert_to_nnunet(second, out, overwrite=True)
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "case01_DE_0000.nii.gz", "case02_DE_0000.nii.gz", "case03_DE_0000.nii.gz"]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["case04_DE_0000.nii.gz"]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    converted = discover(out)
    assert [len(converted.cases(s)) for s in ("train", "val", "test")] == [2, 1, 1]
    assert (out / "README.txt").read_text() == "my notes"
    assert "left 1 file(s) medcl did not write" in caplog.text and "README.txt" in caplog.text


def test_convert_refuses_files_it_did_not_write_where_it_writes(tmp_path):
    source = generate_dataset(tmp_path / "source", num_train=1, **SMALL)
    out = tmp_path / "nnunet"
    convert_to_nnunet(source, out)
    stray = out / "imagesTr" / "zz_0000.nii.gz"
    stray.write_bytes(b"user data")
    with pytest.raises(DataError, match="zz_0000.nii.gz: was not written by medcl, but lies "
                       "where it writes the dataset"):
        convert_to_nnunet(source, out, overwrite=True)
    assert stray.read_bytes() == b"user data"


# -- convert into its own source (item 3) --------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_convert_refuses_an_output_overlapping_the_source(where, tmp_path, capsys):
    source = generate_dataset(tmp_path / "source", num_train=1, num_val=0, num_test=0,
                              shape=SMALL["shape"])
    out = {"same": source, "inside": source / "nnunet", "parent": tmp_path}[where]
    before = sorted(tmp_path.rglob("*"))
    assert main(["convert", str(source), str(out), "--overwrite"]) == 2
    assert "the output folder is, holds or lies inside the input" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


# -- predict --overwrite --continue (item 4) ------------------------------------------------------
def test_predict_refuses_overwrite_with_continue(predictor, trained_run, tmp_path, capsys):
    images, out = _images(tmp_path / "in"), tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["predict", "-i", str(images), "-o", str(out), "-m", str(trained_run),
              "--overwrite", "--continue"])
    assert info.value.code == 2
    assert "argument --continue: not allowed with argument --overwrite" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"overwrite \(--overwrite\) and skip_existing "
                       r"\(--continue\) contradict each other"):
        predict_path(images, out, predictor, overwrite=True, skip_existing=True)
    assert not out.exists()


# -- an nnU-Net dataset.json checked against its files (item 1) -----------------------------------
def _nnunet(root, cases=("a", "b", "c"), stem="{case}_0000", **fields):
    for case in cases:
        write_nifti(root / "imagesTr" / f"{stem.format(case=case)}.nii.gz",
                    np.zeros(SHAPE, np.float32))
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", np.zeros(SHAPE, np.uint8))
    desc = {**SPEC, "file_ending": ".nii.gz", "numTraining": len(cases), **fields}
    (root / "dataset.json").write_text(json.dumps(desc))
    return root


def test_num_training_must_be_the_cases_in_imagesTr(tmp_path):
    root = _nnunet(tmp_path, numTraining=2)
    with pytest.raises(DataError, match=r"dataset.json: numTraining is 2 but .*imagesTr holds 3 "
                       "cases"):
        discover(root)


@pytest.mark.parametrize("stem", ["{case}_0000", "{case}"])
def test_channel_names_checked_against_the_files(stem, tmp_path):
    root = _nnunet(tmp_path, stem=stem, channel_names={"0": "T2", "1": "LGE"})
    with pytest.raises(DataError, match=r"dataset.json: channel_names declares 2 channels "
                       r"\['T2', 'LGE'\] but the images in .*imagesTr have 1 channel \(e.g. a"):
        discover(root)


def test_file_ending_checked_against_the_files(tmp_path, caplog):
    root = _nnunet(tmp_path, file_ending=".png")
    with pytest.raises(DataError, match="dataset.json: file_ending '.png': medcl reads NIfTI "
                       "files only"):
        discover(root)
    _nnunet(tmp_path)
    (tmp_path / "labelsTr" / "c.nii.gz").rename(tmp_path / "labelsTr" / "c.nii")
    with caplog.at_level(logging.WARNING):
        assert len(discover(root).cases("train")) == 3  # still usable: a warning
    assert "1 files do not end in the file_ending '.nii.gz'" in caplog.text
    assert "e.g. c.nii" in caplog.text


def test_split_file_checked_against_imagesTr(tmp_path, caplog):
    root = _nnunet(tmp_path)
    split = root / "splits_final.json"
    split.write_text(json.dumps([{"train": ["a", "x"], "val": ["b"]}]))
    with pytest.raises(DataError, match=r"splits_final.json: cases \['x'\] are not in imagesTr"):
        discover(root)
    split.write_text(json.dumps([{"train": ["a"], "val": ["b"]}]))
    with caplog.at_level(logging.WARNING):
        dataset = discover(root)
    assert [c.case_id for c in dataset.cases("train")] == ["a"]
    assert [c.case_id for c in dataset.cases("val")] == ["b"]
    assert "cases ['c'] of imagesTr are in neither train nor val" in caplog.text
