"""The dataset description: described file layouts (MyoPS), label kinds, groupings."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_nifti

from medcl.data.datasets import discover
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig, normalize_intensity
from medcl.data.slices import load_case
from medcl.errors import ConfigError, DataError

SHAPE = (8, 8, 2)
CHANNELS = ("C0", "DE", "T2")
VAL = "myops_training_101"
MYOPS = {
    "channel_names": {str(i): c for i, c in enumerate(CHANNELS)},
    "labels": {"background": 0, "myocardium": 200, "LV": 500, "edema": 1220, "scar": 2221},
    "label_kinds": {"dense": {"map": {"600": "background"}},
                    "scribble": {"unlabelled": 0, "values": {"background": 3000},
                                 "map": {"600": "background"}, "round": True}},
    "groups": {"Scar": ["scar"], "Edema": ["edema", "scar"]},
    "files": {
        "train": {"images": "train25/{case}_{channel}.nii.gz",
                  "labels": "scribbles/{case}_gd.nii.gz", "label_kind": "scribble",
                  "dense_labels": "train25_myops_gd/{case}_gd.nii.gz", "exclude_cases": [VAL]},
        "val": {"images": "train25/{case}_{channel}.nii.gz",
                "labels": "train25_myops_gd/{case}_gd.nii.gz", "label_kind": "dense",
                "cases": [VAL]},
        "test": {"images": "test20/{case}_{channel}.nii.gz"},
    },
}


def scribble_values():
    """0 unlabelled, 3000 background, 499.98 (LV before rounding), 2221.01 scar, float64."""
    lab = np.zeros(SHAPE, np.float64)
    lab[0, :, 0] = 3000.000121
    lab[3, 3, 0] = 499.97713
    lab[4, 4, 1] = 2221.0117
    return lab


def dense_values():
    lab = np.zeros(SHAPE, np.int16)
    lab[1, 1, 0], lab[2, 2, 0], lab[3, 3, 1], lab[4, 4, 1] = 600, 500, 1220, 2221
    return lab


def make_myops(root, description=MYOPS, drop=None):
    """Two training cases with scribbles (one without geometry), one validation case, one test."""
    for case in ("myops_training_102", "myops_training_103", VAL):
        for c in CHANNELS:
            if (case, c) != drop:
                write_nifti(root / "train25" / f"{case}_{c}.nii.gz",
                            np.random.default_rng(0).random(SHAPE).astype(np.float32))
        write_nifti(root / "train25_myops_gd" / f"{case}_gd.nii.gz", dense_values())
        scr = root / "scribbles" / f"{case}_gd.nii.gz"
        scr.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(scribble_values(), None), str(scr))  # codes 0: no geometry
    for c in CHANNELS:
        write_nifti(root / "test20" / f"myops_test_201_{c}.nii.gz", np.zeros(SHAPE, np.float32))
    path = root / "myops.json"
    path.write_text(json.dumps(description))
    return root, path


def test_described_layout_finds_the_splits(tmp_path):
    root, desc = make_myops(tmp_path)
    ds = discover(root, desc)
    assert ds.layout == "described"
    assert [c.case_id for c in ds.cases("train")] == ["myops_training_102", "myops_training_103"]
    assert [c.case_id for c in ds.cases("val")] == [VAL]
    assert ds.cases("val")[0].label_path.parent.name == "train25_myops_gd"
    assert [p.name for p in ds.cases("test")[0].image_paths] == [
        "myops_test_201_C0.nii.gz", "myops_test_201_DE.nii.gz", "myops_test_201_T2.nii.gz"]
    assert ds.cases("test")[0].label_path is None
    dense = discover(root, desc, train_labels="dense_labels").cases("train")[0]
    assert dense.label_path.parent.name == "train25_myops_gd" and dense.label_kind is None


def test_scribble_code_rounding_and_merge(tmp_path):
    root, desc = make_myops(tmp_path)
    ds = discover(root, desc)
    spec = ds.spec  # classes: 0 background, 1 myocardium, 2 LV, 3 edema, 4 scar; ignore 5
    case = load_case(ds.cases("train")[0], spec, PreprocessConfig(), keep_dense=True)
    labels = case.dense_labels
    assert labels[0, 0, 0] == 0 and labels[3, 3, 0] == 2 and labels[4, 4, 1] == 4
    assert labels[5, 5, 0] == spec.ignore_index == 5
    assert int((labels != 5).sum()) == 8 + 2
    val = load_case(ds.cases("val")[0], spec, PreprocessConfig(), keep_dense=True).dense_labels
    assert val[1, 1, 0] == 0 and val[2, 2, 0] == 2 and val[3, 3, 1] == 3  # RV 600 -> background
    assert val[5, 5, 0] == 0  # dense 0 is background, not unlabelled
    assert torch.equal(case.tags[0], torch.tensor([True, False, True, False, False]))


def test_scribble_value_outside_its_code_names_the_file(tmp_path):
    root, desc = make_myops(tmp_path)
    bad = scribble_values()
    bad[0, 0, 1] = 7
    nib.save(nib.Nifti1Image(bad, None), str(root / "scribbles" / "myops_training_102_gd.nii.gz"))
    ds = discover(root, desc)
    with pytest.raises(DataError, match=r"myops_training_102_gd.nii.gz: label values \[7\] are not "
                                        r"in the declared set .* of label kind 'scribble'"):
        load_case(ds.cases("train")[0], ds.spec, PreprocessConfig())


def test_case_missing_a_sequence_names_the_file(tmp_path):
    root, desc = make_myops(tmp_path, drop=("myops_training_103", "T2"))
    with pytest.raises(DataError, match="myops_training_103_T2.nii.gz: channel 'T2' of case "
                                        "'myops_training_103' is missing"):
        discover(root, desc)


def test_channel_list_that_does_not_match_the_files(tmp_path):
    two = {**MYOPS, "channel_names": {"0": "C0", "1": "DE"}}
    root, desc = make_myops(tmp_path, description=two)
    with pytest.raises(DataError, match=r"_T2.nii.gz: matches no declared channel \['C0', 'DE'\]"):
        discover(root, desc)


def test_sequences_with_different_shapes(tmp_path):
    root, desc = make_myops(tmp_path)
    write_nifti(root / "train25" / "myops_training_102_DE.nii.gz", np.zeros((8, 7, 2), np.float32))
    ds = discover(root, desc)
    with pytest.raises(DataError, match="myops_training_102_DE.nii.gz: shape"):
        load_case(ds.cases("train")[0], ds.spec, PreprocessConfig())


@pytest.mark.parametrize("change, message", [
    ({"groups": {"Edema": ["edema", "oedema"]}},
     r"grouping 'Edema' names unknown classes \['oedema'\]"),
    ({"label_kinds": {"scribble": {"unlabelled": 0, "map": {"600": "RV"}}}},
     r"label kind 'scribble' names unknown classes \['RV'\]"),
    ({"label_kinds": {"scribble": {"unlabelled": 200}}},
     "label kind .scribble. gives one value two"),
    ({"label_kinds": {"scribble": {"unlabeled": 0}}}, "label kind 'scribble' must be an object"),
])
def test_bad_descriptions(change, message):
    with pytest.raises(ConfigError, match=f"myops.json: {message}"):
        LabelSpec.from_dict({**MYOPS, **change}, source="myops.json")


def test_undeclared_kind_in_files(tmp_path):
    files = {**MYOPS["files"], "val": {**MYOPS["files"]["val"], "label_kind": "sparse"}}
    root, desc = make_myops(tmp_path, description={**MYOPS, "files": files})
    with pytest.raises(ConfigError, match="label kind 'sparse' is not declared"):
        discover(root, desc)


def test_spec_round_trip_keeps_kinds_and_groups():
    spec = LabelSpec.from_dict(MYOPS)
    again = LabelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.value_table("scribble") == {3000: 0, 200: 1, 500: 2, 1220: 3, 2221: 4, 600: 0,
                                             0: 5}


def test_normalisation_is_per_channel():
    image = np.stack([np.arange(8.0).reshape(2, 2, 2), 100 + 10 * np.arange(8.0).reshape(2, 2, 2)],
                     axis=-1)
    out = normalize_intensity(image, PreprocessConfig(clip_percentiles=None))
    expected = (np.arange(8.0) - 3.5) / np.std(np.arange(8.0))
    for c in range(2):
        np.testing.assert_allclose(out[..., c].ravel(), expected, rtol=1e-5)


class _AllScar(torch.nn.Module):
    """Logits ``(B, 5, H, W)`` that put every pixel in class 4 (scar)."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 5, *x.shape[-2:])
        out[:, 4] = 1.0
        return out


def test_validation_reports_groupings_and_selects_on_their_mean(tmp_path):
    from medcl.inference.predictor import Predictor
    from medcl.training.validation import validate

    root, desc = make_myops(tmp_path)
    ds = discover(root, desc)
    case = load_case(ds.cases("val")[0], ds.spec, PreprocessConfig(), keep_dense=True)
    result = validate(Predictor(_AllScar(), ds.spec, PreprocessConfig()), [case])
    # 128 voxels predicted scar; ground truth: 1 scar voxel, 1 edema voxel
    assert result["dice"]["Scar"] == pytest.approx(2 / 129)
    assert result["dice"]["Edema"] == pytest.approx(4 / 130)
    assert result["mean_dice"] == pytest.approx((2 / 129 + 4 / 130) / 2)


def test_predict_reads_channel_name_suffixes(tmp_path):
    from medcl.inference.predictor import find_inputs

    root, _ = make_myops(tmp_path)
    cases = find_inputs(root / "test20", 3, CHANNELS)
    assert list(cases) == ["myops_test_201"]
    assert [p.name[-9:] for p in cases["myops_test_201"]] == ["C0.nii.gz", "DE.nii.gz", "T2.nii.gz"]
    with pytest.raises(DataError, match="myops_test_201_C0.nii.gz: expected a name"):
        find_inputs(root / "test20", 3, ("A", "B", "C"))


def test_cli_evaluate_reports_the_groupings(tmp_path, capsys):
    from medcl.cli import main

    root, desc = make_myops(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for path in (root / "train25_myops_gd").iterdir():  # predictions: the labels without RV
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj).copy()
        data[data == 600] = 0
        nib.save(nib.Nifti1Image(data, img.affine, img.header),
                 str(pred / path.name.replace("_gd", "")))
    assert main(["evaluate", str(root / "train25_myops_gd"), str(pred), "--labels", str(desc),
                 "-o", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "| Edema [1220, 2221] | 1.000 ± 0.000" in out
    assert "Mean Dice of the groupings: 1.000" in out
