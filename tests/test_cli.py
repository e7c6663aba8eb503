"""The command line end to end on generated data, and its answers to bad input."""

import gzip
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import CLI_TRAIN_FLAGS, write_nifti
from conftest import one_line_error as _one_line_error

from medcl.cli import main
from medcl.ownership import MANIFEST_NAME


def test_train_predict_evaluate(tiny_dataset, trained_run, tmp_path, capsys):
    images = tiny_dataset / "TestSet" / "images"
    out = tmp_path / "pred"
    assert main(["predict", "-i", str(images), "-o", str(out), "-m", str(trained_run),
                 "--save-probs", "--largest-component", "--overlays", "1"]) == 0
    for src in sorted(images.iterdir()):
        case = src.name.replace(".nii.gz", "")
        pred, ref = nib.load(str(out / f"{case}.nii.gz")), nib.load(str(src))
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-5)
        assert np.issubdtype(pred.get_data_dtype(), np.integer)
        assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1, 2, 3}
        probs = nib.load(str(out / "probs" / f"{case}.nii.gz")).get_fdata()
        assert probs.shape == (*ref.shape, 4)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    assert len(list((out / "overlays").glob("*.png"))) == 2
    capsys.readouterr()
    assert main(["evaluate", str(tiny_dataset / "TestSet" / "labels"), str(out),
                 "--labels", str(tiny_dataset / "dataset.json"), "--images", str(images)]) == 0
    printed = capsys.readouterr().out
    assert "| Myo |" in printed and "HD95" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_cases"] == 2 and set(summary["mean"]) == {"RV", "Myo", "LV"}
    assert (out / "summary.md").is_file()


def test_predict_single_file_and_overwrite_guard(tiny_dataset, trained_run, tmp_path, capsys):
    src = next((tiny_dataset / "TestSet" / "images").iterdir())
    out = tmp_path / "one"
    assert main(["predict", "-i", str(src), "-o", str(out), "-m", str(trained_run)]) == 0
    written = next(out.glob("*.nii.gz"))
    before = written.read_bytes()
    assert main(["predict", "-i", str(src), "-o", str(out), "-m", str(trained_run)]) == 2
    _one_line_error(capsys, str(written), "already exists", "--overwrite")
    assert written.read_bytes() == before
    assert main(["predict", "-i", str(src), "-o", str(out), "-m", str(trained_run),
                 "--overwrite"]) == 0


@pytest.mark.parametrize("problem", ["missing", "empty", "not_nifti", "truncated", "nan", "4d"])
def test_predict_bad_input(problem, trained_run, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_nifti(folder / "good.nii.gz", np.random.default_rng(0).random((40, 40, 3), np.float32))
    bad = folder / "zbad.nii.gz"
    if problem == "missing":
        folder = tmp_path / "nowhere"
        expect = [str(folder), "input not found"]
    elif problem == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
        expect = [str(folder), "no .nii/.nii.gz files"]
    elif problem == "not_nifti":
        bad.write_bytes(gzip.compress(b"this is not an image"))
        expect = [str(bad), "not a readable NIfTI"]
    elif problem == "truncated":
        raw = gzip.decompress(write_nifti(bad, np.ones((40, 40, 3), np.float32)).read_bytes())
        bad.write_bytes(gzip.compress(raw[:400]))
        expect = [str(bad), "not a readable NIfTI"]
    elif problem == "nan":
        arr = np.ones((40, 40, 3), np.float32)
        arr[0, 0, 0] = np.inf
        write_nifti(bad, arr)
        expect = [str(bad), "NaN or infinite"]
    else:
        write_nifti(bad, np.ones((40, 40, 3, 2), np.float32))
        expect = [str(bad), "expected a 3D volume"]
    out = tmp_path / "out"
    code = main(["predict", "-i", str(folder), "-o", str(out), "-m", str(trained_run)])
    if problem in ("missing", "empty"):
        assert code == 2
        _one_line_error(capsys, *expect)
    else:  # one bad case: the good one is still predicted, the failure listed, exit 1
        assert code == 1
        captured = capsys.readouterr()
        failed = [line for line in captured.err.splitlines() if "case zbad failed" in line]
        assert len(failed) == 1 and all(fragment in failed[0] for fragment in expect)
        assert (out / "good.nii.gz").is_file() and "1 cases failed" in captured.out
    leftovers = [p.name for p in out.glob("*") if p.name != MANIFEST_NAME] if out.exists() else []
    assert all(name.endswith(".nii.gz") and ".tmp" not in name for name in leftovers)


def _broken_copy(tiny_dataset, tmp_path, edit):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    label = sorted((root / "train" / "labels").iterdir())[0]
    img = nib.load(str(label))
    edit(root, label, np.asanyarray(img.dataobj).copy(), img.affine)
    return root, label


def test_train_rejects_label_values_and_shapes(tiny_dataset, tmp_path, capsys):
    def bad_value(root, label, data, affine):
        data[0, 0, 0] = 9
        nib.save(nib.Nifti1Image(data, affine), str(label))

    root, label = _broken_copy(tiny_dataset, tmp_path / "v", bad_value)
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "r1"),
                 *CLI_TRAIN_FLAGS]) == 2
    _one_line_error(capsys, str(label), "label values [9] are not in the declared set")
    assert not (tmp_path / "r1").exists()

    def bad_shape(root, label, data, affine):
        nib.save(nib.Nifti1Image(data[:-1], affine), str(label))

    root, label = _broken_copy(tiny_dataset, tmp_path / "s", bad_shape)
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "r2"),
                 *CLI_TRAIN_FLAGS]) == 2
    _one_line_error(capsys, str(label), "shape")


def test_train_rejects_missing_data_and_bad_options(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "dataset folder not found")
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--batch-size", "0"]) == 2
    _one_line_error(capsys, "batch_size must be > 0")


def test_console_entry_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "medcl", "evaluate", str(tmp_path / "gt"),
                           str(tmp_path / "pred")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "folder not found" in proc.stderr


def test_sam_train_and_a_mismatched_checkpoint(tiny_dataset, tmp_path, capsys):
    """``--model sam_tiny`` trains from the CLI; a checkpoint of another size is refused with
    one line that names the file and the disagreeing shapes."""
    import torch

    from medcl.models.sam import build_sam_tiny

    sam_flags = ["--model", "sam_tiny", "--crop-size", "64", "--crop-mode", "center",
                 "--rotate-degrees", "0", "--scale-min", "1", "--scale-max", "1",
                 "--flip-prob", "0", "--no-rot90", "--batch-size", "2", "--iterations", "2",
                 "--val-interval", "0", "--num-threads", "1", "--device", "cpu"]
    assert main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "ok"),
                 "--sam-checkpoint", "none", *sam_flags]) == 0
    state = build_sam_tiny(encoder="vit").state_dict()  # a ViT encoder where TinyViT is expected
    bad = tmp_path / "other.pth"
    torch.save(state, bad)
    capsys.readouterr()
    assert main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "bad"),
                 "--sam-checkpoint", str(bad), *sam_flags]) == 2
    line = _one_line_error(capsys, str(bad))
    assert "missing" in line or "unexpected" in line
    assert not (tmp_path / "bad" / "checkpoints").exists()
