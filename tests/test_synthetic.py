"""Synthetic cardiac data and scribble simulation."""

import json

import nibabel as nib
import numpy as np
import pytest

from medcl.data.datasets import discover
from medcl.data.synthetic import (
    CARDIAC_SPEC,
    DEFAULT_SHAPE,
    generate_dataset,
    make_volume,
    simulate_scribbles,
)
from medcl.errors import ConfigError, DataError

IGNORE = CARDIAC_SPEC.ignore_index
SPACING = (1.6, 1.6, 8.0)


@pytest.fixture(scope="module", params=["mscmr", "nnunet"])
def dataset_dir(request, tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp(request.param), layout=request.param, seed=3)


def test_make_volume_deterministic_and_valid():
    img_a, lab_a = make_volume(np.random.default_rng(5))
    img_b, lab_b = make_volume(np.random.default_rng(5))
    img_c, _ = make_volume(np.random.default_rng(6))
    assert img_a.shape == lab_a.shape == DEFAULT_SHAPE and img_a.dtype == np.float32
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(lab_a, lab_b)
    assert not np.array_equal(img_a, img_c)
    assert np.isfinite(img_a).all()
    for z in range(lab_a.shape[2]):                      # LV and Myo in every slice
        assert {2, 3} <= set(np.unique(lab_a[:, :, z]).tolist())
    assert (lab_a == 1).any()
    # Not a threshold task: RV and LV intensities overlap, and the myocardium is darker.
    rv, lv, myo = (img_a[lab_a == c] for c in (1, 3, 2))
    assert np.percentile(rv, 90) > np.percentile(lv, 10)
    assert np.median(myo) < np.median(lv)


def test_scribbles_sparse_inside_and_covering():
    rng = np.random.default_rng(0)
    missing, slices = 0, 0
    for _ in range(3):
        _, dense = make_volume(rng)
        scr = simulate_scribbles(dense, num_classes=4, ignore_index=IGNORE, rng=rng)
        assert scr.shape == dense.shape
        assert set(np.unique(scr).tolist()) <= {0, 1, 2, 3, IGNORE}
        labelled = scr != IGNORE
        assert 0 < labelled.mean() < 0.15
        np.testing.assert_array_equal(scr[labelled], dense[labelled])
        for c in range(1, 4):
            assert (scr == c).sum() < 0.3 * (dense == c).sum()
        for z in range(dense.shape[2]):
            for c in np.unique(dense[:, :, z]):
                slices += 1
                missing += not (scr[:, :, z] == c).any()
    assert missing <= 0.1 * slices


def test_scribbles_generic_and_deterministic():
    dense = np.zeros((40, 30, 3), dtype=np.int64)
    dense[5:20, 5:25] = 1
    dense[25:35, 10:20, 1:] = 2
    dense[0:4, 0:4, 0] = 5                                # pre-existing unlabelled pixels
    scr_a = simulate_scribbles(dense, num_classes=3, ignore_index=5, rng=np.random.default_rng(1))
    scr_b = simulate_scribbles(dense, num_classes=3, ignore_index=5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(scr_a, scr_b)
    keep = scr_a != 5
    np.testing.assert_array_equal(scr_a[keep], dense[keep])
    for z in range(3):
        assert set(np.unique(scr_a[:, :, z])) - {5} == set(np.unique(dense[:, :, z])) - {5}
    scr_x = simulate_scribbles(dense, num_classes=3, ignore_index=5, slice_axis=0,
                               rng=np.random.default_rng(1))
    assert scr_x.shape == dense.shape


def test_scribbles_validation():
    dense = np.zeros((8, 8, 1), dtype=np.int64)
    with pytest.raises(ConfigError, match="ignore_index 2"):
        simulate_scribbles(dense, num_classes=4, ignore_index=2, rng=np.random.default_rng())
    with pytest.raises(ConfigError, match="num_classes"):
        simulate_scribbles(dense, num_classes=1, ignore_index=4, rng=np.random.default_rng())
    dense[0, 0, 0] = 7
    with pytest.raises(DataError, match=r"\[7\]"):
        simulate_scribbles(dense, num_classes=4, ignore_index=4, rng=np.random.default_rng())


def test_dataset_layout_and_contents(dataset_dir):
    ds = discover(dataset_dir)
    assert {s: len(c) for s, c in ds.splits.items()} == {"train": 8, "val": 2, "test": 3}
    assert ds.spec == CARDIAC_SPEC
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "RV": 1, "Myo": 2, "LV": 3, "ignore": 4}
    assert meta["channel_names"] == {"0": "LGE"}
    if ds.layout == "nnunet":
        assert meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 8
    affines = []
    for split, cases in ds.splits.items():
        for case in cases:
            img, lab = nib.load(case.image_paths[0]), nib.load(case.label_path)
            assert img.shape == DEFAULT_SHAPE and img.get_data_dtype() == np.float32
            assert lab.get_data_dtype() == np.uint8
            np.testing.assert_allclose(img.header.get_zooms(), SPACING, rtol=1e-5)
            np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), SPACING)
            assert not np.allclose(img.affine, np.diag(list(SPACING) + [1]))
            np.testing.assert_allclose(lab.affine, img.affine)
            values = set(np.unique(np.asarray(lab.dataobj)).tolist())
            if split == "train":
                assert values <= {0, 1, 2, 3, 4} and 4 in values
                assert (np.asarray(lab.dataobj) != 4).mean() < 0.15
            else:
                assert values == {0, 1, 2, 3}
            affines.append(img.affine)
    assert not np.allclose(affines[0], affines[1])


@pytest.mark.parametrize("layout", ["mscmr", "nnunet"])
def test_dataset_deterministic(layout, tmp_path):
    small = dict(num_train=2, num_val=1, num_test=1, shape=(48, 40, 3), layout=layout, seed=7)
    first = generate_dataset(tmp_path / "a", **small)
    again = generate_dataset(tmp_path / "b", **small)
    files = sorted(first.rglob("*.nii.gz"))
    assert len(files) == 8
    for path in files:
        a, b = nib.load(path), nib.load(again / path.relative_to(first))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    assert (first / "dataset.json").read_text() == (again / "dataset.json").read_text()


def test_dataset_validation(tmp_path):
    with pytest.raises(ConfigError, match="'bids'"):
        generate_dataset(tmp_path / "a", layout="bids")
    with pytest.raises(ConfigError, match="num_train"):
        generate_dataset(tmp_path / "a", num_train=0)
    with pytest.raises(ConfigError, match="shape"):
        generate_dataset(tmp_path / "a", shape=(16, 16, 4))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(tmp_path / "full")
