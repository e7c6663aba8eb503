"""The CT path end to end on a generated multi-organ phantom: scribble -> convert -> train ->
predict -> evaluate, with the CT window declared in the dataset description; and a run on the
real example CT (its labels are a model's output: the path is exercised, no accuracy is read)."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import real_data_root

from medcl.cli import main as medcl
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig, normalize_intensity
from medcl.data.synthetic_ct import BTCV_ORGANS, generate_ct_dataset, make_ct_volume

WINDOW = [-175, 250]
FAST = ["--crop-size", "32", "--batch-size", "2", "--widths", "4", "8", "16",
        "--infer-batch-size", "4", "--num-threads", "1", "--device", "cpu",
        "--precision", "fp32", "--log-interval", "1", "--warmup-steps", "1"]


def ct_description(train, val, test, labels_folder="scribbles"):
    return {"channel_names": {"0": "CT"}, "intensity": {"CT": {"window": WINDOW}},
            "labels": {"background": 0, **{o: i + 1 for i, o in enumerate(BTCV_ORGANS)},
                       "ignore": 255},
            "files": {"train": {"images": "img/img{case}.nii.gz",
                                "labels": f"{labels_folder}/label{{case}}.nii.gz",
                                "cases": train},
                      "val": {"images": "img/img{case}.nii.gz",
                              "labels": "label/label{case}.nii.gz", "cases": val},
                      "test": {"images": "img/img{case}.nii.gz",
                               "labels": "label/label{case}.nii.gz", "cases": test}}}


def test_phantom_has_every_organ_at_its_hounsfield_units():
    hu, labels = make_ct_volume(np.random.default_rng(0), shape=(128, 128, 32))
    assert set(np.unique(labels)) == set(range(len(BTCV_ORGANS) + 1))
    liver, adrenal = (labels == 6).sum(), (labels == 12).sum()
    assert liver > 100 * adrenal > 0  # organs of very different sizes
    assert abs(np.median(hu[labels == 8]) - 200) < 10  # contrast-enhanced aorta
    assert hu.min() == -1000  # air


def test_ct_window_scales_hounsfield_units_to_the_unit_interval():
    hu = np.array([-1000, -175, 37.5, 250, 1000], dtype=np.float32).reshape(5, 1, 1, 1)
    out = normalize_intensity(hu, PreprocessConfig(windows=((-175.0, 250.0),)))
    assert out.ravel().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_window_must_name_a_channel_and_be_ordered():
    bad = {"labels": {"background": 0, "a": 1}, "channel_names": {"0": "CT"},
           "intensity": {"MR": {"window": [0, 1]}}}
    with pytest.raises(Exception, match="intensity window of 'MR' must name a channel"):
        LabelSpec.from_dict(bad)
    bad["intensity"] = {"CT": {"window": [5]}}
    with pytest.raises(Exception, match=r"needs \"window\": \[low, high\]"):
        LabelSpec.from_dict(bad)


@pytest.mark.slow
def test_phantom_scribble_convert_train_predict_evaluate(tmp_path):
    root = generate_ct_dataset(tmp_path / "btcv", num_cases=4, shape=(64, 64, 6),
                               spacing=(5.0, 5.0, 10.0), seed=1)
    description = root / "dataset.json"
    description.write_text(json.dumps(ct_description(["0001", "0002"], ["0003"], ["0004"])))
    assert medcl(["scribble", str(root / "label"), str(root / "scribbles"), "--labels",
                  str(description)]) == 0
    # every foreground stroke voxel carries the dense label's class
    dense = np.asanyarray(nib.load(root / "label" / "label0001.nii.gz").dataobj)
    strokes = np.asanyarray(nib.load(root / "scribbles" / "label0001.nii.gz").dataobj)
    fg = (strokes != 255) & (strokes != 0)
    assert fg.any() and np.array_equal(strokes[fg], dense[fg])
    converted = tmp_path / "nnunet"
    assert medcl(["convert", str(root), str(converted)]) == 0
    assert json.loads((converted / "dataset.json").read_text())["intensity"] == {
        "CT": {"window": WINDOW}}
    run = tmp_path / "run"
    assert medcl(["train", "--data", str(converted), "--out", str(run), "--iterations", "4",
                  "--val-interval", "2", "--class-balance", "0.5", *FAST]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["class_balance"] == 0.5
    preds = tmp_path / "preds"
    assert medcl(["predict", "-i", str(converted / "imagesTs"), "-o", str(preds), "-m",
                  str(run), "--device", "cpu"]) == 0
    assert medcl(["evaluate", str(converted / "labelsTs"), str(preds), "--labels",
                  str(converted / "dataset.json")]) == 0
    summary = json.loads((preds / "summary.json").read_text())
    assert set(summary["mean"]) >= {"liver", "left_adrenal_gland"}


@pytest.mark.slow
def test_real_example_ct_runs_through_predict(tmp_path):
    folder = real_data_root() / "ct_example"
    image = folder / "example_ct_sm.nii.gz"
    if not image.is_file():
        pytest.skip(f"real CT example not found at {folder} (set MEDCL_DATA)")
    root = tmp_path / "ct"
    (root / "img").mkdir(parents=True)
    (root / "label").mkdir()
    shutil.copy(image, root / "img" / "img0001.nii.gz")
    shutil.copy(folder / "example_seg.nii.gz", root / "label" / "label0001.nii.gz")
    values = np.unique(np.asanyarray(nib.load(root / "label" / "label0001.nii.gz").dataobj))
    desc = {"channel_names": {"0": "CT"}, "intensity": {"CT": {"window": WINDOW}},
            "labels": {"background": 0, **{f"class{int(v)}": int(v) for v in values if v},
                       "ignore": 255},
            "files": {"train": {"images": "img/img{case}.nii.gz",
                                "labels": "label/label{case}.nii.gz"}}}
    (root / "dataset.json").write_text(json.dumps(desc))
    run = tmp_path / "run"
    assert medcl(["train", "--data", str(root), "--out", str(run), "--iterations", "2",
                  "--val-interval", "0", "--target-spacing", "4", *FAST]) == 0
    preds = tmp_path / "preds"
    assert medcl(["predict", "-i", str(root / "img"), "-o", str(preds), "-m", str(run),
                  "--device", "cpu"]) == 0
    out = nib.load(preds / "img0001.nii.gz")
    assert out.shape == nib.load(image).shape
    assert np.allclose(out.affine, nib.load(image).affine, atol=1e-4)
