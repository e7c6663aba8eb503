import gzip

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from medcl.data.io import case_stem, load_image, load_nifti, save_nifti
from medcl.errors import DataError
from medcl.files import atomic_write_text


def test_round_trip_keeps_affine_spacing_and_values(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    src = write_nifti(tmp_path / "a.nii.gz", data, spacing=(0.7, 0.8, 5.0))
    vol = load_nifti(src, kind="label")
    save_nifti(tmp_path / "b.nii.gz", vol.data, vol, dtype=np.uint8)
    back = load_nifti(tmp_path / "b.nii.gz", kind="label")
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, (0.7, 0.8, 5.0), rtol=1e-5)
    assert nib.load(str(tmp_path / "b.nii.gz")).get_data_dtype() == np.uint8


def test_case_stem():
    assert case_stem("x/subject1_DE.nii.gz") == "subject1_DE"
    assert case_stem("y.nii") == "y"


def test_not_nifti_and_truncated_files_are_named(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("hello")
    with pytest.raises(DataError, match="bad.nii.gz: not a readable NIfTI"):
        load_nifti(bad)
    good = write_nifti(tmp_path / "good.nii.gz", np.zeros((8, 8, 4), np.float32))
    raw = gzip.decompress(good.read_bytes())
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match="trunc.nii.gz: not a readable NIfTI"):
        load_nifti(trunc)


def test_4d_nan_and_missing_are_errors(tmp_path):
    four = write_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 3, 2), np.float32))
    with pytest.raises(DataError,
                       match=r"four.nii.gz: expected a 3D volume, got shape \(4, 4, 3, 2\)"):
        load_nifti(four)
    arr = np.zeros((4, 4, 3), np.float32)
    arr[1, 1, 1] = np.nan
    nan = write_nifti(tmp_path / "nan.nii.gz", arr)
    with pytest.raises(DataError, match="nan.nii.gz: 1 voxels are NaN or infinite"):
        load_nifti(nan)
    with pytest.raises(DataError, match="missing.nii.gz: file not found"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_multichannel_geometry_mismatch(tmp_path):
    a = write_nifti(tmp_path / "c_0000.nii.gz", np.zeros((4, 4, 3), np.float32))
    b = write_nifti(tmp_path / "c_0001.nii.gz", np.zeros((4, 5, 3), np.float32))
    with pytest.raises(DataError, match="c_0001.nii.gz: shape"):
        load_image([a, b])
    c = write_nifti(tmp_path / "d_0001.nii.gz", np.ones((4, 4, 3), np.float32))
    vol = load_image([a, c])
    assert vol.data.shape == (4, 4, 3, 2)


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    ref = load_nifti(write_nifti(tmp_path / "r.nii.gz", np.zeros((2, 2, 2), np.float32)))
    with pytest.raises(ValueError, match="does not match reference"):
        save_nifti(tmp_path / "r2.nii.gz", np.zeros((3, 3, 3)), ref)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "r.nii.gz"]
