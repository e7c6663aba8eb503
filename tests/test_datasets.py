import json

import numpy as np
import pytest
from conftest import write_nifti

from medcl.data.datasets import Case, discover
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig
from medcl.data.slices import load_case, select_scribbled
from medcl.errors import ConfigError, DataError

SPEC = {"labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3, "ignore": 4},
        "channel_names": {"0": "LGE"}}


def _mscmr(root, ids=("subject1_DE", "subject10_DE"), suffix="_scribble", split="train"):
    for cid in ids:
        write_nifti(root / split / "images" / f"{cid}.nii.gz", np.zeros((6, 6, 2), np.float32))
        write_nifti(root / split / "labels" / f"{cid}{suffix}.nii.gz",
                    np.zeros((6, 6, 2), np.uint8))
    (root / "dataset.json").write_text(json.dumps(SPEC))
    return root


def test_mscmr_layout_pairs_by_case_id_with_any_suffix(tmp_path):
    root = _mscmr(tmp_path)
    _mscmr(tmp_path, ids=("subject3_DE",), suffix="_gt", split="TestSet")
    ds = discover(root)
    assert ds.layout == "mscmr"
    train = ds.cases("train")
    assert [c.case_id for c in train] == ["subject10_DE", "subject1_DE"]
    assert train[1].label_path.name == "subject1_DE_scribble.nii.gz"
    assert ds.cases("test")[0].label_path.name == "subject3_DE_gt.nii.gz"
    assert ds.spec.class_names == ("background", "RV", "Myo", "LV")
    assert ds.spec.ignore_index == 4


def test_missing_partner_is_named(tmp_path):
    root = _mscmr(tmp_path)
    (root / "train" / "labels" / "subject10_DE_scribble.nii.gz").unlink()
    with pytest.raises(DataError,
                       match="subject10_DE.nii.gz: no label file for case 'subject10_DE'"):
        discover(root)


def test_orphan_label_is_named(tmp_path):
    root = _mscmr(tmp_path)
    write_nifti(root / "train" / "labels" / "other_DE_manual.nii.gz", np.zeros((6, 6, 2), np.uint8))
    with pytest.raises(DataError, match="other_DE_manual.nii.gz: no image with a matching case id"):
        discover(root)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="nope: dataset folder not found"):
        discover(tmp_path / "nope")
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "dataset.json").write_text(json.dumps(SPEC))
    with pytest.raises(DataError, match="images: folder holds no .nii/.nii.gz files"):
        discover(tmp_path)


def test_nnunet_layout_with_channels(tmp_path):
    spec = dict(SPEC, channel_names={"0": "T2", "1": "LGE"}, file_ending=".nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    for cid in ("a", "b"):
        for ch in (0, 1):
            write_nifti(tmp_path / "imagesTr" / f"{cid}_{ch:04d}.nii.gz",
                        np.zeros((6, 6, 2), np.float32))
        write_nifti(tmp_path / "labelsTr" / f"{cid}.nii.gz", np.zeros((6, 6, 2), np.uint8))
    write_nifti(tmp_path / "imagesTs" / "c_0000.nii.gz", np.zeros((6, 6, 2), np.float32))
    write_nifti(tmp_path / "imagesTs" / "c_0001.nii.gz", np.zeros((6, 6, 2), np.float32))
    ds = discover(tmp_path)
    assert ds.layout == "nnunet"
    assert ds.spec.in_channels == 2
    assert [len(c.image_paths) for c in ds.cases("train")] == [2, 2]
    assert ds.cases("test")[0].label_path is None
    (tmp_path / "imagesTr" / "b_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'b' has channels \\[0\\], expected 0..1"):
        discover(tmp_path)


def test_label_values_outside_declared_set(tmp_path):
    spec = LabelSpec.from_dict(SPEC)
    img = write_nifti(tmp_path / "x.nii.gz", np.zeros((6, 6, 2), np.float32))
    lab = np.zeros((6, 6, 2), np.uint8)
    lab[0, 0, 0] = 7
    labp = write_nifti(tmp_path / "x_gt.nii.gz", lab)
    with pytest.raises(DataError,
                       match=r"x_gt.nii.gz: label values \[7\] are not in the declared set"):
        load_case(Case("x", (img,), labp), spec, PreprocessConfig())


def test_image_label_shape_mismatch(tmp_path):
    spec = LabelSpec.from_dict(SPEC)
    img = write_nifti(tmp_path / "x.nii.gz", np.zeros((6, 6, 2), np.float32))
    labp = write_nifti(tmp_path / "x_gt.nii.gz", np.zeros((6, 7, 2), np.uint8))
    with pytest.raises(DataError, match="x_gt.nii.gz: shape"):
        load_case(Case("x", (img,), labp), spec, PreprocessConfig())
    # unit spacing at the origin: a header without geometry is put on the image's grid
    labp = write_nifti(tmp_path / "y_gt.nii.gz", np.zeros((6, 6, 2), np.uint8), affine=np.eye(4))
    load_case(Case("x", (img,), labp), spec, PreprocessConfig())
    # a real conflict (other spacing, both headers valid) stays an error
    labp = write_nifti(tmp_path / "z_gt.nii.gz", np.zeros((6, 6, 2), np.uint8),
                       spacing=(1.5, 1.5, 4.0))
    with pytest.raises(DataError, match="z_gt.nii.gz: affine differs .*spacing"):
        load_case(Case("x", (img,), labp), spec, PreprocessConfig())


def test_spec_maps_values_and_indices():
    spec = LabelSpec.from_dict({"labels": {"background": 0, "Myo": 200, "LV": 500, "ignore": 9}})
    vals = np.array([[0, 200], [500, 9]])
    idx = spec.to_indices(vals)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(spec.to_values(idx), [[0, 200], [500, 0]])
    with pytest.raises(ConfigError, match="background must have value 0"):
        LabelSpec.from_dict({"labels": {"a": 1, "b": 2}})


def test_select_scribbled_default_order_and_explicit():
    cases = [Case(f"subject{i}_DE", ()) for i in (13, 2, 14, 4, 15, 18, 19)]
    assert select_scribbled(cases, num_scribbled=3) == {"subject13_DE", "subject14_DE",
                                                        "subject15_DE"}
    assert select_scribbled(cases, scribbled_cases=["subject2_DE"]) == {"subject2_DE"}
    assert len(select_scribbled(cases)) == 7
    with pytest.raises(ConfigError, match="num_scribbled must be in 1..7"):
        select_scribbled(cases, num_scribbled=9)
    with pytest.raises(ConfigError, match=r"\['nope'\] are not training cases"):
        select_scribbled(cases, scribbled_cases=["nope"])


def test_load_case_preprocesses_and_keeps_tags_when_unlabelled(tmp_path):
    spec = LabelSpec.from_dict(SPEC)
    img = np.random.default_rng(0).normal(size=(20, 10, 3)).astype(np.float32)
    lab = np.full((20, 10, 3), 4, np.uint8)
    lab[5:8, 2:4, 1] = 3
    lab[0:2, 0:2, 1] = 0
    ip = write_nifti(tmp_path / "x.nii.gz", img, spacing=(1.0, 2.0, 5.0))
    lp = write_nifti(tmp_path / "x_s.nii.gz", lab, spacing=(1.0, 2.0, 5.0))
    case = load_case(Case("x", (ip,), lp), spec, PreprocessConfig(target_spacing=2.0),
                     labelled=False)
    assert case.image.shape == (3, 1, 10, 10)
    assert case.labels is None and not case.labelled
    assert case.tags.tolist()[1] == [True, False, False, True]
    assert case.tags.tolist()[0] == [False, False, False, False]
