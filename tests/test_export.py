"""``medcl export``: the model file (``.medcl``) predicts as the run does, alone in another
folder, and refuses a damaged, edited, newer or foreign file with one line (exit 2)."""

import json
import os
import shutil
import zipfile

import nibabel as nib
import numpy as np
import pytest
from conftest import one_line_error

from medcl.cli import main
from medcl.errors import DataError
from medcl.inference.predictor import Predictor
from medcl.runtime.model_file import (
    FORMAT_VERSION,
    JSON_MEMBERS,
    MANIFEST,
    WEIGHTS,
    read_model_file,
    sha256_bytes,
)
from medcl.training.export import LICENCE_UNSET, export_run, shareable_config

PREDICT_FLAGS = ["--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The trained run's model file (read-only for tests)."""
    out = tmp_path_factory.mktemp("export") / "model.medcl"
    assert main(["export", str(trained_run), str(out), "--licence", "CC-BY-4.0"]) == 0
    return out


def _labels(folder):
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def _predict(model, images, out):
    assert main(["predict", "-i", str(images), "-o", str(out), "-m", str(model),
                 *PREDICT_FLAGS]) == 0
    return _labels(out)


def _rewrite(src, dst, *, replace=None, add=None):
    """Copy the zip ``src`` to ``dst`` with members replaced (``{name: bytes}``) or added."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            new.writestr(name, (replace or {}).get(name, old.read(name)))
        for name, data in (add or {}).items():
            new.writestr(name, data)
    return dst


def test_export_holds_every_member_with_its_sha256(exported, trained_run):
    state = read_model_file(exported)
    with zipfile.ZipFile(exported) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        assert set(archive.namelist()) == {MANIFEST, WEIGHTS, *JSON_MEMBERS.values()}
        for name, digest in manifest["members"].items():
            assert sha256_bytes(archive.read(name)) == digest
    assert manifest["format_version"] == FORMAT_VERSION
    assert not any(k.startswith("optim") for k in state["weights"])
    assert state["about"]["licence"] == "CC-BY-4.0" and state["about"]["torch"]
    assert state["training_data"]["cases"] == {"train": 4, "val": 1}
    assert state["training_data"]["in_channels"] == 1
    assert state["metrics"]["validation"]["mean_dice"] == state["metrics"]["best"]
    assert state["postprocessing"] == json.loads((trained_run / "postprocessing.json").read_text())
    text = json.dumps({k: state[k] for k in JSON_MEMBERS})
    cases = json.loads((trained_run / "cases.json").read_text())
    assert not any(case in text for ids in cases.values() for case in ids)  # no case id
    assert str(trained_run.parent) not in text and state["config"]["data"] == "synth"


def test_the_shared_configuration_holds_no_path_or_case_id():
    cfg = {"data": "/home/me/patients/cardiac", "labels": None, "init_from": "/x/run/best.pt",
           "scribbled_cases": ["patient_0042"], "crop_size": 32}
    assert shareable_config(cfg) == {"data": "cardiac", "labels": None, "init_from": "best.pt",
                                     "scribbled_cases": None, "crop_size": 32}


def test_predictions_from_the_export_equal_the_run_folders(exported, trained_run, tiny_dataset,
                                                           tmp_path):
    images = tiny_dataset / "TestSet" / "images"
    from_run = _predict(trained_run, images, tmp_path / "run")
    from_export = _predict(exported, images, tmp_path / "export")
    assert from_run.keys() == from_export.keys() and from_run
    for name in from_run:
        np.testing.assert_array_equal(from_run[name], from_export[name])
    a = Predictor.from_run(trained_run, device="cpu", precision="fp32")
    b = Predictor.from_export(exported, device="cpu", precision="fp32")
    assert a.postprocessing == b.postprocessing and a.preprocess == b.preprocess
    assert a.spec == b.spec and a.window == b.window


def test_export_in_two_folders(trained_run, tiny_dataset, tmp_path, monkeypatch):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(trained_run, folder_a / "run")
    monkeypatch.chdir(folder_a)
    assert main(["export", "run", "model.medcl"]) == 0
    folder_b.mkdir()
    shutil.copy2(folder_a / "model.medcl", folder_b / "model.medcl")
    shutil.rmtree(folder_a)  # nothing of the run is left to read
    monkeypatch.chdir(folder_b)
    images = tiny_dataset / "TestSet" / "images"
    assert sorted(os.listdir(folder_b)) == ["model.medcl"]
    there = _predict("model.medcl", images, folder_b / "preds")
    here = _predict(trained_run, images, tmp_path / "preds")
    assert there.keys() == here.keys()
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])


def test_a_damaged_newer_or_foreign_file_is_one_line_exit_2(exported, tiny_dataset, tmp_path,
                                                            capsys):
    images = tiny_dataset / "TestSet" / "images"
    with zipfile.ZipFile(exported) as archive:
        config = json.loads(archive.read("config.json"))
        manifest = json.loads(archive.read(MANIFEST))
    config["target_spacing"] = 3.0
    edited = _rewrite(exported, tmp_path / "edited.medcl",
                      replace={"config.json": json.dumps(config).encode()})
    newer = _rewrite(exported, tmp_path / "newer.medcl", replace={MANIFEST: json.dumps(
        {**manifest, "format_version": FORMAT_VERSION + 1}).encode()})
    extra = _rewrite(exported, tmp_path / "extra.medcl", add={"run.py": b"import os"})
    foreign = tmp_path / "foreign.medcl"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("readme.txt", "a zip, not a model")
    not_zip = tmp_path / "text.medcl"
    not_zip.write_text("not a zip")
    cases = {edited: "config.json does not match its sha256", newer: "newer than this medcl",
             extra: "not in manifest.json", foreign: "not a medcl model file",
             not_zip: "not a medcl model file"}
    for path, message in cases.items():
        assert main(["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m", str(path),
                     *PREDICT_FLAGS]) == 2
        one_line_error(capsys, str(path), message)
        with pytest.raises(DataError, match=message):
            Predictor.from_export(path)
    assert not (tmp_path / "out").exists()


def test_export_refuses_to_overwrite(trained_run, tmp_path, capsys):
    out = tmp_path / "model.medcl"
    assert main(["export", str(trained_run), str(out)]) == 0
    assert main(["export", str(trained_run), str(out)]) == 2
    one_line_error(capsys, str(out), "already exists", "--overwrite")
    assert main(["export", str(trained_run), str(out), "--overwrite"]) == 0
    assert read_model_file(out)["about"]["licence"] == LICENCE_UNSET
    mine = tmp_path / "notes.medcl"
    mine.write_text("my notes")
    assert main(["export", str(trained_run), str(mine), "--overwrite"]) == 2
    one_line_error(capsys, str(mine), "exists and was not written by medcl")
    assert mine.read_text() == "my notes"
    with pytest.raises(DataError, match="checkpoint not found"):
        export_run(tmp_path / "no_run", tmp_path / "x.medcl")
