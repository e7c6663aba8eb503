"""The geometry policy on headers built like the public releases (ACDC, MyoPS)."""

import logging

import nibabel as nib
import numpy as np
import pytest

from medcl.data.geometry import (
    GeometryNotes,
    check_geometry,
    header_geometry,
    read_image,
    resolve_volume,
)
from medcl.data.io import load_nifti, save_nifti
from medcl.errors import ConfigError, DataError

SHAPE = (6, 5, 3)
ACDC_SPACING = (1.5625, 1.5625, 10.0)


def oblique(spacing, angle=0.3, origin=(-10.0, 20.0, 5.0)):
    c, s = np.cos(angle), np.sin(angle)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def save(path, *, qform=None, sform=None, zooms=None, dtype=np.float32):
    """A file with exactly the given qform, sform (None: code 0) and pixdim."""
    img = nib.Nifti1Image(np.zeros(SHAPE, dtype), None)
    img.set_qform(qform, code=1 if qform is not None else 0)
    img.set_sform(sform, code=1 if sform is not None else 0)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


def acdc_image(path):
    """ACDC: a unit-scaled sform beside a correct qform and pixdim (1.5625 mm)."""
    good = oblique(ACDC_SPACING)
    unit = good.copy()
    unit[:3, :3] = good[:3, :3] / np.array(ACDC_SPACING)
    return save(path, qform=good, sform=unit, zooms=ACDC_SPACING)


def test_acdc_unit_sform_is_reported_and_the_qform_followed(tmp_path):
    geom = header_geometry(load_nifti(acdc_image(tmp_path / "img.nii.gz")).header)
    assert geom.source == "qform"
    np.testing.assert_allclose(geom.spacing, ACDC_SPACING, rtol=1e-5)
    assert "sform spacing (1, 1, 1) mm vs pixdim (1.562, 1.562, 10) mm" in geom.inconsistency
    assert "nibabel reads the sform" in geom.inconsistency
    assert not geom.lost


def test_acdc_image_trains_with_its_scribble_and_notes_the_defect(tmp_path):
    image = resolve_volume(load_nifti(acdc_image(tmp_path / "img.nii.gz")))
    scribble = load_nifti(save(tmp_path / "scr.nii.gz", qform=oblique(ACDC_SPACING),
                               sform=oblique(ACDC_SPACING), dtype=np.uint8))
    notes = GeometryNotes()
    assert check_geometry(image, scribble, notes=notes)
    assert len(notes.items) == 1 and notes.items[0][0].endswith("img.nii.gz")
    assert "header inconsistent" in notes.items[0][1]


def test_file_whose_qform_matches_the_image_but_sform_not_is_put_on_the_grid(tmp_path):
    image = load_nifti(save(tmp_path / "img.nii.gz", qform=oblique(ACDC_SPACING),
                            sform=oblique(ACDC_SPACING)))
    label = load_nifti(save(tmp_path / "lab.nii.gz", qform=oblique(ACDC_SPACING),
                            sform=oblique(ACDC_SPACING, angle=0.6)))
    notes = GeometryNotes()
    assert not check_geometry(image, label, notes=notes)
    assert "disagrees with itself" in notes.items[-1][1]


@pytest.mark.parametrize("build", ["codes0", "itk_default"])
def test_myops_scribble_without_geometry_is_put_on_the_grid(tmp_path, build):
    image = load_nifti(save(tmp_path / "img.nii.gz", qform=oblique((0.73, 0.73, 12.0))))
    if build == "codes0":  # qform and sform codes 0, unit pixdim
        scribble = load_nifti(save(tmp_path / "scr.nii.gz"))
    else:  # what SimpleITK writes for a bare array: qform code 1, diag(-1, -1, 1), origin 0
        scribble = load_nifti(save(tmp_path / "scr.nii.gz", qform=np.diag([-1.0, -1.0, 1.0, 1.0])))
    assert header_geometry(scribble.header).lost
    notes = GeometryNotes()
    assert not check_geometry(image, scribble, notes=notes)
    assert "no geometry in its header" in notes.items[0][1]
    with pytest.raises(DataError, match="scr.nii.gz: affine differs"):
        check_geometry(image, scribble, mode="strict")


@pytest.mark.parametrize("other, message", [
    (oblique((1.0, 1.0, 12.0)), r"spacing \(1, 1, 12\) vs \(0.73, 0.73, 12\) mm"),
    (oblique((0.73, 0.73, 12.0), angle=0.3 + np.pi / 2), "orientation"),
    (oblique((0.73, 0.73, 12.0), origin=(-10.0, 23.0, 9.0)), "origin offset 5.00 mm"),
])
def test_genuine_conflict_is_an_error_naming_the_option(tmp_path, other, message):
    image = load_nifti(save(tmp_path / "img.nii.gz", qform=oblique((0.73, 0.73, 12.0))))
    label = load_nifti(save(tmp_path / "lab.nii.gz", qform=other, sform=other))
    with pytest.raises(DataError, match=f"lab.nii.gz: affine differs from .*img.nii.gz "
                                        f"\\(.*{message}.*--geometry image"):
        check_geometry(image, label)
    notes = GeometryNotes()
    assert not check_geometry(image, label, mode="image", notes=notes)
    assert "accepted by --geometry image" in notes.items[0][1]


def test_shape_mismatch_and_bad_mode(tmp_path):
    image = load_nifti(save(tmp_path / "img.nii.gz", qform=oblique(ACDC_SPACING)))
    other = load_nifti(save(tmp_path / "lab.nii.gz", qform=oblique(ACDC_SPACING)))
    other.data = other.data[:-1]
    with pytest.raises(DataError, match="lab.nii.gz: shape"):
        check_geometry(image, other, mode="image")
    with pytest.raises(ConfigError, match="geometry='loose' is not valid"):
        check_geometry(image, image, mode="loose")


def test_channels_checked_with_the_policy(tmp_path):
    c0 = save(tmp_path / "c_C0.nii.gz", qform=oblique((0.73, 0.73, 12.0)))
    de = save(tmp_path / "c_DE.nii.gz", qform=oblique((0.8, 0.8, 12.0)))
    with pytest.raises(DataError, match="c_DE.nii.gz: affine differs .*spacing"):
        read_image([c0, de])
    assert read_image([c0, c0]).data.shape == (*SHAPE, 2)


def test_predictions_get_a_consistent_header(tmp_path):
    """qform = sform = the geometry used, pixdim its spacing: ITK and nibabel read the same."""
    image = read_image([acdc_image(tmp_path / "img.nii.gz")])
    save_nifti(tmp_path / "pred.nii.gz", np.zeros(SHAPE, np.uint8), image, dtype=np.uint8)
    header = nib.load(str(tmp_path / "pred.nii.gz")).header
    assert int(header["qform_code"]) > 0 and int(header["sform_code"]) > 0
    np.testing.assert_allclose(header.get_sform(), oblique(ACDC_SPACING), atol=1e-4)
    np.testing.assert_allclose(header.get_qform(), oblique(ACDC_SPACING), atol=1e-4)
    np.testing.assert_allclose(header.get_zooms(), ACDC_SPACING, rtol=1e-5)
    assert header_geometry(header).inconsistency is None


def test_one_warning_per_dataset_lists_the_files(caplog):
    notes = GeometryNotes()
    for i in range(7):
        notes.add(f"s{i}.nii.gz", "no geometry")
    notes.add("s0.nii.gz", "no geometry")  # the same note twice is listed once
    with caplog.at_level(logging.WARNING):
        notes.warn("MyoPS")
    assert len(caplog.records) == 1
    assert "MyoPS: 7 header problem(s)" in caplog.text and "s4.nii.gz" in caplog.text
    assert "s5.nii.gz" not in caplog.text and "(and 2 more)" in caplog.text


def _unit_sform(path):
    """Rewrite ``path`` like the ACDC release: sform unit-scaled, qform and pixdim kept."""
    img = nib.load(str(path))
    qform = img.header.get_qform()
    unit = qform.copy()
    unit[:3, :3] = qform[:3, :3] / np.linalg.norm(qform[:3, :3], axis=0)
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), None, img.header)
    out.set_qform(qform, code=1)
    out.set_sform(unit, code=1)
    nib.save(out, str(path))


def test_cli_trains_on_an_acdc_like_release_and_names_the_option(tiny_dataset, tmp_path, capsys):
    import shutil

    from conftest import CLI_TRAIN_FLAGS as TRAIN_FLAGS

    from medcl.cli import main

    root = tmp_path / "acdc"
    shutil.copytree(tiny_dataset, root)
    for path in [*root.glob("*/images/*.nii.gz"), *root.glob("val/labels/*.nii.gz")]:
        _unit_sform(path)
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *TRAIN_FLAGS]) == 0
    assert "header inconsistent (sform spacing (1, 1, 1) mm vs pixdim" in capsys.readouterr().err
    assert main(["predict", "-i", str(root / "TestSet" / "images"), "-o", str(tmp_path / "pred"),
                 "-m", str(tmp_path / "run")]) == 0
    pred = nib.load(str(next((tmp_path / "pred").glob("*.nii.gz")))).header
    np.testing.assert_allclose(pred.get_sform(), pred.get_qform(), atol=1e-4)
    # a genuine conflict: one scribble file says another spacing
    scribble = next(root.glob("train/labels/*.nii.gz"))
    img = nib.load(str(scribble))
    wrong = img.affine.copy()
    wrong[:3, :3] *= 1.25
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), wrong), str(scribble))
    capsys.readouterr()
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run2"), *TRAIN_FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{scribble.name}: affine differs" in err and "spacing" in err
    assert "--geometry image" in err
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run3"), "--geometry",
                 "image", *TRAIN_FLAGS]) == 0
