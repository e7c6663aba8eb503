"""medcl convert: nnU-Net v2 layout, and the same slices as the source."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_nifti
from test_description import make_myops

from medcl.cli import main
from medcl.data.convert import convert_to_nnunet
from medcl.data.datasets import discover
from medcl.data.preprocessing import PreprocessConfig
from medcl.data.slices import load_case
from medcl.errors import ConfigError, DataError


def _slices(root, labels=None):
    ds = discover(root, labels)
    cfg = PreprocessConfig(target_spacing=1.2)
    return {split: {c.case_id: load_case(c, ds.spec, cfg) for c in ds.cases(split)}
            for split in ("train", "val")}


@pytest.mark.parametrize("source", ["myops", "mscmr"])
def test_converted_folder_trains_on_the_same_slices(tmp_path, tiny_dataset, source):
    if source == "myops":
        root, desc = make_myops(tmp_path / "src")
    else:
        root, desc = tiny_dataset, None
    out = tmp_path / "nnunet"
    convert_to_nnunet(root, out, labels_file=desc)
    original, converted = _slices(root, desc), _slices(out)
    for split in ("train", "val"):
        assert sorted(original[split]) == sorted(converted[split])
        for case_id, case in original[split].items():
            other = converted[split][case_id]
            assert torch.equal(case.image, other.image)
            assert torch.equal(case.labels, other.labels)


def test_nnunet_files_and_dataset_json(tmp_path):
    root, desc = make_myops(tmp_path / "src")
    out = tmp_path / "nnunet"
    assert main(["convert", str(root), str(out), "--labels", str(desc)]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "C0", "1": "DE", "2": "T2"}
    assert meta["labels"] == {"background": 0, "myocardium": 1, "LV": 2, "edema": 3, "scar": 4,
                              "ignore": 5}
    assert meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 3
    assert meta["groups"] == {"Scar": ["scar"], "Edema": ["edema", "scar"]}
    split = json.loads((out / "splits_final.json").read_text())
    assert split == [{"train": ["myops_training_102", "myops_training_103"],
                      "val": ["myops_training_101"]}]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        f"myops_test_201_000{c}.nii.gz" for c in range(3)]
    scribble = nib.load(str(out / "labelsTr" / "myops_training_102.nii.gz"))
    assert sorted(np.unique(np.asanyarray(scribble.dataobj)).tolist()) == [0, 2, 4, 5]
    image = nib.load(str(out / "imagesTr" / "myops_training_102_0000.nii.gz"))
    # the scribble lost its geometry in the source; in the output it has its image's
    np.testing.assert_allclose(scribble.affine, image.affine, atol=1e-5)
    assert int(scribble.header["qform_code"]) > 0 and int(scribble.header["sform_code"]) > 0
    assert main(["convert", str(root), str(out), "--labels", str(desc)]) == 2  # not empty


def test_convert_refuses_a_non_empty_folder(tmp_path, tiny_dataset):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(DataError, match="output folder is not empty"):
        convert_to_nnunet(tiny_dataset, tmp_path)


def test_ct_layout_is_a_described_pattern(tmp_path):
    """BTCV's img/imgXXXX, label/labelXXXX with one channel: a description, no code."""
    root = tmp_path / "ct"
    for case in ("0001", "0002"):
        write_nifti(root / "img" / f"img{case}.nii.gz", np.full((6, 6, 2), -1000.0, np.float32))
        write_nifti(root / "label" / f"label{case}.nii.gz", np.ones((6, 6, 2), np.uint8))
    desc = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1},
            "files": {"train": {"images": "img/img{case}.nii.gz",
                                "labels": "label/label{case}.nii.gz"}}}
    (root / "dataset.json").write_text(json.dumps(desc))
    convert_to_nnunet(root, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "imagesTr").iterdir()) == [
        "0001_0000.nii.gz", "0002_0000.nii.gz"]
    bad = {**desc, "files": {"train": {**desc["files"]["train"],
                                       "labels": "label/x_{channel}.nii.gz"}}}
    (root / "dataset.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"label pattern 'label/x_\{channel\}.nii.gz' needs"):
        discover(root)
