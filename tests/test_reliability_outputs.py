"""Never destroy a user's files, keep going past one bad case (issue #10, items 1, 2, 6, 8)."""

import logging
import os
import shutil

import numpy as np
import pytest
from conftest import tiny_config, write_nifti

from medcl.cli import main
from medcl.demo import _prepare_out, run_demo
from medcl.errors import CasesFailed, ConfigError, DataError, WriteError
from medcl.evaluation import evaluate as evaluate_module
from medcl.evaluation.evaluate import evaluate_folders
from medcl.inference.predictor import Predictor, predict_path
from medcl.ownership import OutputFolder


@pytest.fixture(scope="module")
def predictor(tiny_dataset, tmp_path_factory):
    from medcl.training.run import train

    run = tmp_path_factory.mktemp("rel") / "run"
    train(tiny_config(tiny_dataset, iterations=2, val_interval=2), run)
    return Predictor.from_run(run, device="cpu")


def _images(tmp_path, names=("a", "b")):
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    for name in names:
        write_nifti(folder / f"{name}.nii.gz", rng.random((40, 40, 2), np.float32))
    return folder


# -- demo --overwrite (item 1) -----------------------------------------------------------------
def test_demo_overwrite_never_removes_the_users_data(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "precious.nii.gz").write_bytes(b"user data")
    _prepare_out(tmp_path, True, [data], ("run", "predictions", "evaluation"))
    assert (data / "train" / "precious.nii.gz").read_bytes() == b"user data"
    # without --data the demo would write OUT/data: a folder it did not create is refused
    with pytest.raises(DataError, match="data: exists and was not written by medcl demo"):
        _prepare_out(tmp_path, True, [], ("data", "run", "predictions", "evaluation"))
    assert (data / "train" / "precious.nii.gz").is_file()


def test_demo_overwrite_removes_only_its_recorded_parts(tmp_path):
    _prepare_out(tmp_path, False, [], ("data", "run", "predictions", "evaluation"))
    assert sorted(OutputFolder(tmp_path, "demo").recorded()) == [
        "data", "evaluation", "predictions", "run"]
    for part in ("data", "run"):
        (tmp_path / part / "sub").mkdir(parents=True)
        (tmp_path / part / "sub" / "x").write_text("demo output")
        OutputFolder(tmp_path / part, "demo").record([tmp_path / part / "sub" / "x"])
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError, match="data: an earlier demo is here; pass --overwrite"):
        _prepare_out(tmp_path, False, [], ("data", "run", "predictions", "evaluation"))
    _prepare_out(tmp_path, True, [], ("data", "run", "predictions", "evaluation"))
    assert not any((tmp_path / "data").iterdir()) and not any((tmp_path / "run").iterdir())
    assert (tmp_path / "notes").is_dir()


@pytest.mark.slow
def test_demo_cli_with_data_inside_out_keeps_it(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(tiny_dataset, out / "data")
    before = sorted(p.relative_to(out) for p in (out / "data").rglob("*"))
    assert main(["demo", "--out", str(out), "--data", str(out / "data"), "--overwrite",
                 "--minutes", "0.005", "--device", "cpu"]) == 0
    assert sorted(p.relative_to(out) for p in (out / "data").rglob("*")) == before
    assert (out / "evaluation" / "summary.json").is_file()


def test_demo_minutes_checked_before_generating(tmp_path):
    with pytest.raises(ConfigError, match="minutes must be > 0, got -1"):
        run_demo(tmp_path / "demo", minutes=-1)
    assert not (tmp_path / "demo").exists()


# -- predict into its own input (item 2) --------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "inside", "parent", "symlink"])
def test_predict_refuses_an_output_overlapping_the_input(where, predictor, tmp_path):
    images = _images(tmp_path)
    output = {"same": images, "inside": images / "pred", "parent": tmp_path,
              "symlink": tmp_path / "alias"}[where]
    if where == "symlink":
        os.symlink(images, output)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    with pytest.raises(DataError, match="the output folder is, holds or lies inside the input"):
        predict_path(images, output, predictor, overwrite=True)
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


def test_overwrite_replaces_only_predictions_and_reports_stale_summaries(predictor, tmp_path,
                                                                         caplog):
    images, out = _images(tmp_path), tmp_path / "out"
    predict_path(images, out, predictor)
    (out / "summary.json").write_text("{}")
    (out / "mine.txt").write_text("keep")
    with caplog.at_level(logging.WARNING):
        written = predict_path(images, out, predictor, overwrite=True)
    assert [p.name for p in written] == ["a.nii.gz", "b.nii.gz"]
    assert (out / "mine.txt").read_text() == "keep"
    assert "summary.json: left from an earlier evaluation" in caplog.text


# -- keep going, skip what is done (item 8) ------------------------------------------------------
def test_predict_keeps_going_and_lists_failures(predictor, tmp_path):
    images = _images(tmp_path, ("a", "b", "c"))
    (images / "b.nii.gz").write_bytes(b"not an image")
    with pytest.raises(CasesFailed, match=r"1 of 3 cases failed: b: .*b.nii.gz: not a readable"
                       ) as info:
        predict_path(images, tmp_path / "out", predictor)
    assert [p.name for p in info.value.written] == ["a.nii.gz", "c.nii.gz"]
    assert info.value.exit_code == 1


def test_predict_continue_skips_existing_outputs(predictor, tmp_path, capsys):
    images, out = _images(tmp_path), tmp_path / "out"
    predict_path(images, out, predictor)
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    (out / "b.nii.gz").unlink()
    written = predict_path(images, out, predictor, skip_existing=True)
    assert [p.name for p in written] == ["b.nii.gz"]
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="already exists .* or --continue to skip them"):
        predict_path(images, out, predictor)


# -- unwritable outputs fail before the work (item 6) -------------------------------------------
def test_evaluate_checks_the_output_before_computing_metrics(tmp_path, monkeypatch):
    gt = np.zeros((6, 6, 2), np.uint8)
    gt[1:3, 1:3] = 1
    write_nifti(tmp_path / "gt" / "a.nii.gz", gt)
    write_nifti(tmp_path / "pred" / "a.nii.gz", gt)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")

    def no_metrics(*args, **kwargs):
        raise AssertionError("metrics computed before the output was checked")

    monkeypatch.setattr(evaluate_module, "case_metrics", no_metrics)
    with pytest.raises(WriteError, match=r"file/out: cannot write \(.*\); .* free on that disk"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", out_dir=blocker / "out")


def test_predict_single_bad_file_is_its_own_error(predictor, tmp_path):
    images = _images(tmp_path, ("a",))
    (images / "a.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match="a.nii.gz: not a readable NIfTI") as info:
        predict_path(images / "a.nii.gz", tmp_path / "out", predictor)
    assert not isinstance(info.value, CasesFailed)


def test_postprocess_checks_the_run_folder_before_computing(tiny_dataset, tmp_path, monkeypatch,
                                                            capsys):
    """A read-only run folder (simulated: tests run as root, which may write anywhere)."""
    import errno
    import tempfile

    from medcl.training import postprocessing_choice
    from medcl.training.run import train

    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, iterations=2, val_interval=2, postprocessing="none"), run)
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and os.path.samefile(dir, run):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(postprocessing_choice, "load_run_validation",
                        lambda cfg: pytest.fail("validation cases read before the check"))
    assert main(["postprocess", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"medcl postprocess: error: {run}: cannot write "
                                               "(PermissionError: [Errno 13] Permission denied")
