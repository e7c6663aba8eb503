"""Bad and suspicious input (issue #10, items 9-15): one-line errors naming the file, warnings
where the input is legal but suspicious, nothing guessed silently."""

import logging
import os
import shutil
import struct

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import tiny_config, write_nifti

from medcl.cli import main
from medcl.data.datasets import discover, group_channels, nifti_files
from medcl.data.io import load_nifti, nifti_spacing
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig, resampled_size
from medcl.data.slices import load_case
from medcl.errors import ConfigError, DataError
from medcl.evaluation.evaluate import evaluate_folders
from medcl.files import atomic_write_text
from medcl.training.config import TrainConfig

DATATYPE_OFFSET = 70  # NIfTI-1 header: int16 datatype
PIXDIM1_OFFSET = 80  # float32 pixdim[1]


def _patch_header(path, offset, fmt, value):
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    path.write_bytes(bytes(raw))
    return path


def _plain_nifti(path, shape=(6, 5, 2)):
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
                             np.diag([1.5, 1.5, 5.0, 1.0])), str(path))
    return path


def test_corrupt_datatype_is_a_data_error(tmp_path):
    path = _patch_header(_plain_nifti(tmp_path / "dt.nii"), DATATYPE_OFFSET, "<h", 999)
    with pytest.raises(DataError, match=r"dt.nii: not a readable NIfTI file \(HeaderDataError"):
        load_nifti(path)


@pytest.mark.parametrize("value", [0.0, -1.5, float("nan")])
def test_pixdim_not_positive_is_refused_not_set_to_1mm(tmp_path, value):
    path = _patch_header(_plain_nifti(tmp_path / "p.nii"), PIXDIM1_OFFSET, "<f", value)
    with pytest.raises(DataError, match=r"p.nii: voxel size \(pixdim\) \[.*\] must be > 0"):
        load_nifti(path)
    with pytest.raises(DataError, match="p.nii: voxel size"):
        nifti_spacing(path)


def test_header_voxel_count_over_the_bound_fails_fast(tmp_path):
    path = _plain_nifti(tmp_path / "big.nii")
    _patch_header(path, 42, "<h", 30000)  # dim[1]
    _patch_header(path, 44, "<h", 30000)  # dim[2]: 1.8e9 voxels, the file holds 60
    with pytest.raises(DataError, match=r"big.nii: header shape \(30000, 30000, 2\) has"):
        load_nifti(path)


def test_train_on_random_bytes_names_the_file(tiny_dataset, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    bad = min((root / "train" / "images").iterdir())
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"),
                 "--iterations", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("medcl train: error: ") and f"{bad}: not a readable NIfTI" in err


def test_hidden_files_are_not_cases_and_dangling_links_warn(tmp_path, caplog):
    folder = tmp_path / "imgs"
    write_nifti(folder / "case.nii.gz", np.zeros((4, 4, 2), np.float32))
    (folder / "._case.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    atomic_write_text(folder / "keep.txt", "x")
    (folder / ".case.nii.gz.abcd1234.tmp.nii.gz").write_bytes(b"partial")
    os.symlink(tmp_path / "gone.nii.gz", folder / "link.nii.gz")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in nifti_files(folder)] == ["case.nii.gz"]
    assert "link.nii.gz: dangling symlink" in caplog.text


def test_same_case_in_train_and_val_is_an_error(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    for sub in ("images", "labels"):
        src = min((root / "train" / sub).iterdir())
        shutil.copy(src, root / "val" / sub / src.name)
    with pytest.raises(DataError, match="is in both the train and the val split"):
        discover(root)


def test_one_channel_model_given_a_two_channel_folder(tmp_path):
    files = [write_nifti(tmp_path / f"case_{c:04d}.nii.gz", np.zeros((4, 4, 2), np.float32))
             for c in (0, 1)]
    with pytest.raises(DataError, match="case_0001.nii.gz: looks like channel 1 of case 'case'"):
        group_channels(files, in_channels=1)
    assert list(group_channels(files, in_channels=2)) == ["case"]


def test_empty_scribble_warns_and_is_unlabelled(tiny_dataset, tmp_path, caplog):
    dataset = discover(tiny_dataset)
    case = dataset.cases("train")[0]
    spec = dataset.spec
    empty_dir = tmp_path / "empty_scribble"
    label = load_nifti(case.label_path, kind="label")
    empty = write_nifti(empty_dir / case.label_path.name,
                        np.full(label.shape, spec.ignore_index, np.uint8), affine=label.affine)
    empty_case = type(case)(case.case_id, case.image_paths, empty)
    with caplog.at_level(logging.WARNING):
        prepared = load_case(empty_case, spec, PreprocessConfig(), labelled=True)
    assert not prepared.labelled and prepared.labels is None
    assert f"{empty}: no scribbled voxel" in caplog.text


def test_constant_image_warns(tmp_path, caplog):
    path = write_nifti(tmp_path / "flat.nii.gz", np.full((4, 4, 2), 7.0, np.float32))
    with caplog.at_level(logging.WARNING):
        load_nifti(path)
    assert "flat.nii.gz: every voxel has the value 7" in caplog.text


def test_evaluate_refuses_a_value_outside_the_label_definition(tmp_path):
    gt = np.zeros((6, 6, 2), np.uint8)
    gt[1:3, 1:3] = 1
    pred = gt.copy()
    pred[4, 4, 0] = 7
    write_nifti(tmp_path / "gt" / "a.nii.gz", gt)
    write_nifti(tmp_path / "pred" / "a.nii.gz", pred)
    with pytest.raises(DataError, match=r"a.nii.gz: label values \[7\] are not in the label"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", class_values={"fg": 1})


@pytest.mark.parametrize("value, message", [
    ({"batch_size": "8"}, "batch_size='8' is not valid; expected int"),
    ({"lr": None}, "lr=None is not valid; expected float"),
    ({"widths": [4, "a"]}, "expected a list of int or null"),
    ({"rot90": 1}, "rot90=1 is not valid; expected bool"),
    ({"num_threads": 0}, "num_threads must be >= 1, got 0"),
    ({"target_spacing": 0.0}, "target_spacing must be finite and > 0, got 0.0"),
    ({"checkpoint_minutes": -1.0}, "checkpoint_minutes must be finite and >= 0, got -1.0"),
])
def test_config_values_of_the_wrong_type_or_range(value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        TrainConfig(data="x", **value)


def test_config_file_of_the_wrong_shape(tmp_path, capsys):
    bad = tmp_path / "c.json"
    bad.write_text('{"data": "x", "iterations": null}')
    assert main(["train", "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
    assert "iterations=None is not valid; expected int" in capsys.readouterr().err
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="c.json: expected a JSON object of options, got list"):
        TrainConfig.from_file(bad)


def test_resampled_slice_over_the_bound_is_refused_before_allocating():
    with pytest.raises(ConfigError, match=r"target_spacing 0.001 mm would resample a 256x256 "
                                          r"slice at 1.5x1.5 mm to 384000x384000 pixels"):
        resampled_size((256, 256), (1.5, 1.5), 0.001)
    assert resampled_size((256, 256), (1.5, 1.5), 0.75) == (512, 512)


@pytest.mark.parametrize("argv, message", [
    (["predict", "-i", "x", "-o", "y", "-m", "z", "--overlays", "-3"], "must be >= 0, got -3"),
    (["evaluate", "g", "p", "--overlays", "-1"], "must be >= 0, got -1"),
    (["demo", "--minutes", "-1"], "must be > 0, got -1"),
    (["demo", "--minutes", "soon"], "expected a number, got 'soon'"),
])
def test_cli_option_ranges_are_usage_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "demo_run").exists()  # refused before any data was generated


def test_train_with_a_huge_target_spacing_ratio_exits_2(tiny_dataset, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"),
                 "--target-spacing", "0.0001", "--device", "cpu"]) == 2
    assert "more than the 16777216 allowed" in capsys.readouterr().err


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_predictor_accepts_a_checkpoint_file(tiny_dataset, tmp_path):
    from medcl.inference.predictor import Predictor
    from medcl.training.run import train

    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, iterations=2, val_interval=2), run)
    from_file = Predictor.from_run(run / "checkpoints" / "best.pt", device="cpu")
    from_dir = Predictor.from_run(run, device="cpu")
    for a, b in zip(from_file.model.state_dict().values(), from_dir.model.state_dict().values()):
        assert torch.equal(a, b)
    assert LabelSpec.from_dict(from_file.spec.to_dict()) == from_dir.spec


# -- issue #36: options checked where they are declared, before anything is read --------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value, message", [
    ({"crop_size": 37}, "crop_size must be a multiple of 16 for model 'unet' (it halves its "
                        "input 4 times), got 37; e.g. 32 or 48"),
    ({"crop_size": 4, "widths": [4, 8, 16, 32]}, "crop_size must be a multiple of 8 for model "
                                                  "'unet' with widths [4, 8, 16, 32] (it halves "
                                                  "its input 3 times), got 4; e.g. 8"),
    ({"widths": [4]}, "widths needs at least 2 positive values, got (4,)"),
    ({"widths": [4, 0]}, "every value of widths must be >= 1, got [4, 0]"),
    ({"lr": NAN}, "lr must be finite and > 0, got nan"),
    ({"weight_decay": -1.0}, "weight_decay must be finite and >= 0, got -1.0"),
    ({"temperature": NAN}, "temperature must be finite and > 0, got nan"),
    ({"pce_weight": INF}, "pce_weight must be finite and >= 0, got inf"),
    ({"max_minutes": NAN}, "max_minutes must be finite and > 0, got nan"),
    ({"checkpoint_minutes": INF}, "checkpoint_minutes must be finite and >= 0, got inf"),
    ({"target_spacing": INF}, "target_spacing must be finite and > 0, got inf"),
    ({"seed": -1}, "seed must be in [0, 4294967295], got -1"),  # numpy's seeding range
    ({"intra_max_angle": 181.0}, "intra_max_angle must be in [0, 180], got 181.0"),
    ({"mix_beta": 0.0}, "mix_beta must be finite and > 0, got 0.0"),
    ({"num_prototypes": 1}, "num_prototypes must be >= 2, got 1"),
    ({"rotate_degrees": -1.0}, "rotate_degrees must be finite and >= 0, got -1.0"),
    ({"roi_margin": -0.5}, "roi_margin must be finite and >= 0, got -0.5"),
    ({"intra_box_min": 0.0}, "intra_box_min must be in (0, 1], got 0.0"),
    ({"intra_box_min": 0.9, "intra_box_max": 0.5}, "intra_box_min must be <= intra_box_max, got "
                                                    "0.9 > 0.5"),
])
def test_option_gaps_are_refused_on_construction(value, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(data="x", **value)
    assert str(info.value) == message


def test_every_numeric_option_declares_its_range_and_refuses_nan(tmp_path):
    import dataclasses

    from medcl.training.config import field_type

    numeric = [f for f in dataclasses.fields(TrainConfig) if field_type(f)[0] in (int, float)]
    assert len(numeric) > 40 and not [f.name for f in numeric if "valid" not in f.metadata]
    for f in numeric:
        if field_type(f)[0] is float:
            for bad in (NAN, INF, -INF):
                with pytest.raises(ConfigError, match=f"^{f.name} must be"):
                    TrainConfig(data="x", **{f.name: bad})
    stored = tmp_path / "config.json"  # JSON allows NaN: a stored or --config file is named
    stored.write_text('{"data": "x", "lr": NaN}')
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_file(stored)
    assert str(info.value) == f"{stored}: lr must be finite and > 0, got nan"


@pytest.fixture
def annotate_root(tmp_path):
    from medcl.data.synthetic import generate_dataset

    return generate_dataset(tmp_path / "ds", num_train=2, num_val=1, num_test=0,
                            shape=(32, 40, 3), seed=2)


def test_annotate_port_in_use_is_one_line_and_exit_2(annotate_root, monkeypatch, capsys):
    import socket

    pytest.importorskip("fastapi", reason="medcl[annotate] is not installed (fastapi)")
    pytest.importorskip("uvicorn", reason="medcl[annotate] is not installed (uvicorn)")
    from medcl.annotate import server

    monkeypatch.setattr(server, "open_session", lambda *a, **k: pytest.fail("session opened"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["annotate", str(annotate_root), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"medcl annotate: error: 127.0.0.1:{port}: the port is in use (another medcl "
                   "annotate?); choose another with --port"]


def test_annotate_skips_a_case_whose_image_links_out_of_the_dataset(annotate_root, tmp_path,
                                                                     caplog):
    from medcl.annotate.cases import CaseStore

    image = annotate_root / "train/images/case01_DE.nii.gz"
    shutil.move(image, tmp_path / "outside.nii.gz")
    image.symlink_to(tmp_path / "outside.nii.gz")  # its scribble file stays in the dataset
    with caplog.at_level(logging.WARNING):
        store = CaseStore(annotate_root)
    assert sorted(store.cases) == ["case02_DE"]
    assert f"{image}: resolves outside {annotate_root.resolve()}; case 'case01_DE' skipped" \
        in caplog.text
