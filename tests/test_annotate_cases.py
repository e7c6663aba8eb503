"""medcl.annotate without HTTP: drawing values, uploads, uncertainty, the case store."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from medcl.annotate.cases import CaseStore, StaleVersion, UnknownCase
from medcl.annotate.drawing import (
    ShapeMismatch,
    UploadTooLarge,
    class_colors,
    decode_drawing,
    pens_to_labels,
)
from medcl.annotate.jobs import read_metrics, round_config
from medcl.annotate.uncertainty import (
    case_summary,
    rank_slices,
    slice_uncertainty,
    voxel_entropy,
)
from medcl.data.labels import LabelSpec
from medcl.data.synthetic import generate_dataset
from medcl.errors import ConfigError, DataError

SPEC = LabelSpec(("background", "RV", "Myo", "LV"), (0, 1, 2, 3), ignore_value=4)
SHAPE = (10, 8, 3)
STORE_SHAPE = (32, 32, 3)  # the synthetic generator needs 32 x 32 slices


def drawing_bytes(pens: np.ndarray, *, compress: bool = False) -> bytes:
    raw = nib.Nifti1Image(pens, np.eye(4)).to_bytes()
    return gzip.compress(raw) if compress else raw


@pytest.fixture
def store(tmp_path) -> CaseStore:
    root = generate_dataset(tmp_path / "ds", num_train=2, num_val=1, num_test=0, shape=STORE_SHAPE,
                            seed=1, layout="nnunet")
    (root / "labelsTr" / "case02.nii.gz").unlink()  # case02 is not scribbled yet
    return CaseStore(root)


def test_pens_map_to_label_values_with_unlabelled_as_ignore():
    pens = np.array([0, 1, 2, 3, 4])
    assert pens_to_labels(pens, SPEC, source="x").tolist() == [4, 0, 1, 2, 3]
    with pytest.raises(DataError, match="drawing values must be 0 .unlabelled. .. 4, got 5"):
        pens_to_labels(np.array([5]), SPEC, source="x")


def test_decode_drawing_checks_shape_size_and_values():
    pens = np.zeros(SHAPE, dtype=np.uint8)
    pens[1, 2, 0] = 3
    assert decode_drawing(drawing_bytes(pens, compress=True), SHAPE, source="u")[1, 2, 0] == 3
    with pytest.raises(ShapeMismatch, match=r"drawing shape \(10, 8, 2\) differs .* \(10, 8, 3\)"):
        decode_drawing(drawing_bytes(pens[:, :, :2]), SHAPE, source="u")
    bomb = gzip.compress(b"\0" * 10_000_000)  # 10 kB that inflate to 10 MB
    with pytest.raises(UploadTooLarge, match="decompressed upload exceeds"):
        decode_drawing(bomb, SHAPE, source="u")
    with pytest.raises(DataError, match="not a NIfTI-1 drawing"):
        decode_drawing(b"hello", SHAPE, source="u")
    with pytest.raises(DataError, match="non-integer"):
        decode_drawing(drawing_bytes(pens.astype(np.float32) + 0.5), SHAPE, source="u")


def test_class_colors_from_description_and_defaults():
    colors = class_colors(SPEC, {"colors": {"RV": "#010203"}}, source="d.json")
    assert colors[1] == "#010203" and len(colors) == 4 and colors[0] != colors[2]
    with pytest.raises(ConfigError, match=r"d.json: 'colors' has unknown classes \['XX'\]"):
        class_colors(SPEC, {"colors": {"XX": "#010203"}}, source="d.json")


def test_entropy_is_one_for_uniform_and_zero_for_certain():
    probs = np.zeros((2, 1, 2, 2))
    probs[..., 0, 0] = 1.0  # slice 0 certain
    probs[0, 0, 1] = (0.5, 0.5)  # slice 1: one uniform voxel, one certain
    probs[1, 0, 1] = (0.0, 1.0)
    assert voxel_entropy(probs)[:, 0, :].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert slice_uncertainty(probs) == [0.0, 0.5]
    assert rank_slices([0.1, 0.3, 0.3, 0.2]) == [1, 2, 3, 0]
    assert case_summary([0.1, 0.3]) == {"worst_slice": 1, "worst": 0.3, "mean": 0.2}


def test_store_lists_status_and_rejects_unknown_ids(store):
    assert sorted(store.cases) == ["case01", "case02"]
    assert store.status("case02") == {"version": "none", "scribbled_slices": [], "counts": {}}
    status = store.status("case01")
    assert status["scribbled_slices"] and sum(status["counts"].values()) > 0
    for bad in ("case03", "../labelsTr/case01", "/etc/passwd", None):
        with pytest.raises(UnknownCase, match="unknown case id"):
            store.get(bad)


def test_save_keeps_geometry_and_the_previous_version(store):
    image = store.image("case01")
    before = store.get("case01").scribble_path.read_bytes()
    pens = np.zeros(STORE_SHAPE, dtype=np.uint8)
    pens[2, 3, 1] = 1  # background pen
    pens[4, 4, 2] = 4  # LV pen
    version = store.save("case01", pens, expected_version=store.version("case01"))
    saved = nib.load(str(store.get("case01").scribble_path))
    data = np.asarray(saved.dataobj)
    assert data[2, 3, 1] == 0 and data[4, 4, 2] == 3 and (data == 4).sum() == data.size - 2
    assert np.allclose(saved.affine, image.affine)
    assert np.allclose(saved.get_qform(), image.affine)
    assert np.allclose(saved.get_sform(), image.affine)
    assert int(saved.header["qform_code"]) > 0 and int(saved.header["sform_code"]) > 0
    assert [p.read_bytes() for p in store.history("case01")] == [before]
    with pytest.raises(StaleVersion, match="changed since it was loaded"):
        store.save("case01", pens, expected_version="stale")
    assert store.version("case01") == version


def test_images_alone_folder_annotates_but_does_not_train(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), str(root / "a.nii.gz"))
    (root / "dataset.json").write_text(json.dumps(SPEC.to_dict()))
    store = CaseStore(root)
    assert list(store.cases) == ["a"] and not store.trainable
    assert store.get("a").scribble_path == root.resolve() / "scribbles" / "a.nii.gz"


def test_label_definition_without_ignore_is_refused(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    with pytest.raises(ConfigError, match="no 'ignore' value"):
        CaseStore(root)


def test_round_config_trains_on_all_scribbles_and_refuses_other_options(tmp_path):
    base = {"num_scribbled": 2, "iterations": 100, "batch_size": 3}
    cfg = round_config(base, tmp_path, None, {"iterations": 7})
    assert (cfg["iterations"], cfg["batch_size"], cfg["num_scribbled"]) == (7, 3, None)
    assert cfg["data"] == str(tmp_path)
    with pytest.raises(ConfigError, match=r"training options \['lr'\] cannot be set"):
        round_config(base, tmp_path, None, {"lr": 1.0})


def test_a_round_fine_tunes_the_previous_model_unless_asked_from_scratch(tmp_path):
    """A round starts from the current model's weights (the base run's own init_from and its
    sha256 are replaced); ``from_scratch`` on the page keeps the initial weights."""
    base = {"iterations": 100, "init_from": "/elsewhere/model.medcl", "init_from_sha256": "ab" * 32}
    previous = tmp_path / "rounds" / "round_002"
    cfg = round_config(base, tmp_path, None, {"iterations": 7}, init_from=previous)
    assert (cfg["init_from"], cfg["init_from_sha256"]) == (str(previous), None)
    scratch = round_config(base, tmp_path, None, {"from_scratch": True}, init_from=previous)
    assert (scratch["init_from"], scratch["init_from_sha256"]) == (None, None)
    first = round_config({"iterations": 100}, tmp_path, None, {}, init_from=None)
    assert first["init_from"] is None
    with pytest.raises(ConfigError, match="from_scratch must be true or false, got 'yes'"):
        round_config(base, tmp_path, None, {"from_scratch": "yes"}, init_from=previous)


def test_read_metrics_collects_curve_and_skips_partial_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "step", "step": 1, "total": 4, "elapsed": 0.5, "loss": 2.0}\n'
                    '{"event": "val", "step": 1, "mean_dice": 0.25}\n{"event": "st')
    out = read_metrics(path)
    assert (out["step"], out["total"], out["loss"], out["val"]) == (1, 4, [[1, 2.0]], [[1, 0.25]])


def test_history_keeps_the_first_version_and_the_newest_ones(store, monkeypatch):
    monkeypatch.setattr("medcl.annotate.cases.MAX_VERSIONS", 2)
    for pen in (1, 2, 3, 4, 1):
        store.save("case01", np.full(STORE_SHAPE, pen, np.uint8))
    kept = store.history("case01")
    # five saves replaced five files: the original (v1) and the saves of pens 1, 2, 3, 4
    assert [p.name for p in kept] == ["v000001.nii.gz", "v000004.nii.gz", "v000005.nii.gz"]
    values = [int(np.asarray(nib.load(str(p)).dataobj)[0, 0, 0]) for p in kept[1:]]
    assert values == [2, 3]  # pens 3 and 4 are on-disk values 2 and 3
