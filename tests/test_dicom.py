"""DICOM series input: geometry, case discovery, errors, and predict/evaluate on series folders."""

import sys

import nibabel as nib
import numpy as np
import pytest

from medcl.data.dicom import (
    load_case_image,
    load_series,
    load_volume,
    save_series,
    series_affine,
    volume_files,
)
from medcl.errors import ConfigError, DataError
from medcl.evaluation.evaluate import evaluate_folders

sitk = pytest.importorskip("SimpleITK", reason="DICOM input needs the 'dicom' extra")

SHAPE = (6, 5, 4)
# an oblique grid: rotation about z by 0.3 rad, voxels 0.7 x 0.8 x 2.5 mm, origin (10, -20, 30)
COS, SIN = np.cos(0.3), np.sin(0.3)
AFFINE = np.array([[0.7 * COS, -0.8 * SIN, 0, 10.0],
                   [0.7 * SIN, 0.8 * COS, 0, -20.0],
                   [0, 0, 2.5, 30.0],
                   [0, 0, 0, 1]])


def volume():
    return np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)


def test_series_round_trip_keeps_values_and_geometry(tmp_path):
    files = save_series(tmp_path / "case1", volume(), AFFINE)
    assert len(files) == SHAPE[2]
    vol = load_series(tmp_path / "case1")
    assert vol.data.shape == SHAPE and vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, volume())
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    assert vol.spacing == pytest.approx((0.7, 0.8, 2.5))
    labels = load_volume(tmp_path / "case1", kind="label")
    assert labels.data.dtype == np.int64


def test_dicom_stores_lps_positions(tmp_path):
    """Hand check of the RAS <-> LPS convention on the written tags of the first slice."""
    files = save_series(tmp_path / "s", volume(), AFFINE)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    reader.ReadImageInformation()
    position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
    # RAS origin (10, -20, 30) is LPS (-10, 20, 30)
    assert position == pytest.approx([-10.0, 20.0, 30.0])
    # first row direction (voxel axis X) in LPS: (-cos, -sin, 0)
    orientation = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
    assert orientation[:3] == pytest.approx([-COS, -SIN, 0.0])
    # and back: SimpleITK's LPS geometry gives our RAS affine
    direction = (-COS, SIN, 0, -SIN, -COS, 0, 0, 0, 1)  # LPS matrix, row-major
    np.testing.assert_allclose(series_affine((0.7, 0.8, 2.5), (-10, 20, 30), direction), AFFINE,
                               atol=1e-12)


def test_volume_files_lists_nifti_and_series_folders(tmp_path):
    save_series(tmp_path / "b_case", volume(), AFFINE)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE), str(tmp_path / "a.nii.gz"))
    (tmp_path / "notes").mkdir()  # a folder without DICOM files is not a case
    (tmp_path / "notes" / "readme.txt").write_text("x")
    assert [p.name for p in volume_files(tmp_path)] == ["a.nii.gz", "b_case"]
    # a folder that is itself one series is the only case
    assert volume_files(tmp_path / "b_case") == [tmp_path / "b_case"]
    with pytest.raises(DataError, match="notes: folder holds no .nii/.nii.gz files and no DICOM"):
        volume_files(tmp_path / "notes")


def test_mixed_series_folder_is_an_error(tmp_path):
    save_series(tmp_path / "mixed", volume(), AFFINE, series_uid="2.25.1")
    shifted = AFFINE.copy()
    shifted[2, 3] += 100.0
    for path in save_series(tmp_path / "other", volume(), shifted, series_uid="2.25.2"):
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    with pytest.raises(DataError, match=r"mixed: holds 2 DICOM series \(SeriesInstanceUID "
                                        r"2\.25\.1, 2\.25\.2\); put each series in its own folder"):
        load_series(tmp_path / "mixed")


def test_missing_simpleitk_names_the_extra(tmp_path, monkeypatch):
    save_series(tmp_path / "s", volume(), AFFINE)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(ConfigError, match=r"DICOM input needs SimpleITK.*'medcl\[dicom\]'"):
        load_case_image([tmp_path / "s"])


def test_evaluate_reads_series_folders(tmp_path):
    gt = np.zeros(SHAPE, np.int16)
    gt[1:5, 1:4, 1:3] = 2
    save_series(tmp_path / "gt" / "case1", gt, AFFINE)
    save_series(tmp_path / "images" / "case1", volume(), AFFINE)
    pred = gt.copy()
    pred[1, :, :] = 0  # 6 of 24 voxels missed: Dice 2 * 18 / 42
    nib.save(nib.Nifti1Image(pred, AFFINE), str(tmp_path / "case1.nii.gz"))
    (tmp_path / "pred").mkdir()
    (tmp_path / "case1.nii.gz").rename(tmp_path / "pred" / "case1.nii.gz")
    summary = evaluate_folders(tmp_path / "gt", tmp_path / "pred", class_values={"Myo": 2},
                               image_dir=tmp_path / "images", overlay_dir=tmp_path / "png")
    assert summary["cases"]["case1"]["Myo"]["dice"] == pytest.approx(36 / 42)
    assert summary["affine_mismatch"] == []  # the NIfTI prediction lies on the DICOM grid
    assert summary["overlays"]["case1"]


def test_writing_a_series_keeps_the_locale(tmp_path):
    """GDCM's writer sets the C locale; medcl restores it so later UTF-8 text writes work."""
    import locale

    before = locale.setlocale(locale.LC_ALL)
    save_series(tmp_path / "s", volume(), AFFINE)
    assert locale.setlocale(locale.LC_ALL) == before


def test_non_positive_spacing_is_refused(tmp_path, monkeypatch):
    sitk = pytest.importorskip("SimpleITK")
    save_series(tmp_path / "s", volume(), AFFINE)
    monkeypatch.setattr(sitk.Image, "GetSpacing", lambda self: (0.0, 1.0, 2.0))
    with pytest.raises(DataError, match=r"voxel size \(0.0, 1.0, 2.0\) mm is not positive"):
        load_series(tmp_path / "s")
