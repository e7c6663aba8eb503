"""The geometry policy on headers built like the public releases (ACDC, MyoPS)."""

import logging

import nibabel as nib
import numpy as np
import pytest

from medcl.data.geometry import (
    GeometryNotes,
    align,
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


# --- labels stored in another orientation: reoriented exactly or refused, never mirrored ------

def _signed_permutations():
    """The 48 axis-aligned orientations: 6 axis orders x 8 sign patterns."""
    import itertools
    return [(axes, signs) for axes in itertools.permutations(range(3))
            for signs in itertools.product((1, -1), repeat=3)]


def _stored_as(data, affine, axes, signs):
    """The same voxels stored in another axis order and direction: the array and the affine
    that put every voxel at the same place in the world (what a converter writing another
    orientation does)."""
    flips = [a for a in range(3) if signs[a] < 0]
    stored = np.flip(data, flips) if flips else data
    flip_matrix = np.eye(4)
    for a in flips:
        flip_matrix[a, a], flip_matrix[a, 3] = -1.0, data.shape[a] - 1
    inverse = np.argsort(axes)  # stored axis b is original axis axes[b]
    stored = np.transpose(stored, axes)
    permute = np.zeros((4, 4))
    permute[3, 3] = 1.0
    for b, a in enumerate(axes):
        permute[a, b] = 1.0
    assert list(inverse) == [list(axes).index(a) for a in range(3)]
    return np.ascontiguousarray(stored), affine @ flip_matrix @ permute


@pytest.mark.parametrize("image_affine", ["ras_at_origin", "oblique"])
def test_every_one_of_48_orientations_is_reoriented_exactly(tmp_path, image_affine):
    """A label stored in any of the 48 axis-aligned orientations of its image's voxels comes
    back voxel-identical on the image's grid, also where the image is axis-aligned at 0 (the
    header the old policy took as lost)."""
    shape, spacing = (5, 4, 3), (0.8, 0.9, 6.0)
    affine = (np.diag([*spacing, 1.0]) if image_affine == "ras_at_origin"
              else oblique(spacing, angle=0.4))
    labels = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    image = load_nifti(_write(tmp_path / "img.nii.gz", labels.astype(np.float32), affine))
    assert len(_signed_permutations()) == 48
    for i, (axes, signs) in enumerate(_signed_permutations()):
        stored, stored_affine = _stored_as(labels, affine, axes, signs)
        path = _write(tmp_path / f"lab{i}.nii.gz", stored, stored_affine)
        for mode in ("auto", "image", "strict"):
            aligned, agrees = align(image, load_nifti(path, kind="label"), mode=mode)
            assert agrees, (axes, signs)
            np.testing.assert_array_equal(aligned.data, labels, err_msg=f"{axes} {signs} {mode}")


def _write(path, data, affine):
    """``data`` at ``path`` with ``affine`` as qform and sform (codes 1)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("origin", [(0.0, 0.0, 0.0), (-40.0, 12.0, 7.0)])
def test_mirrored_header_without_the_shift_is_refused_in_every_mode(tmp_path, origin):
    """The reliability probe's case: the label's array flipped along x and the affine's x
    column negated (LAS), the image RAS. The grids are not the same voxels, so using the label
    voxel for voxel would train on a mirror: refused, also with --geometry image."""
    shape, spacing = (6, 5, 3), (1.5, 1.5, 8.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    labels = np.zeros(shape, np.uint8)
    labels[:2] = 1
    image = load_nifti(_write(tmp_path / "img.nii.gz", labels.astype(np.float32), affine))
    mirrored = affine.copy()
    mirrored[:3, 0] *= -1
    path = _write(tmp_path / "lab.nii.gz", labels[::-1].copy(), mirrored)
    for mode in ("auto", "image"):
        with pytest.raises(DataError, match="lab.nii.gz: stored in orientation LAS, .*img.nii.gz "
                                            "in RAS.*would mirror or transpose it"):
            align(image, load_nifti(path, kind="label"), mode=mode)


def test_label_written_without_geometry_beside_a_scanner_image_is_still_taken(tmp_path):
    """MSCMR's subject43 label: identity at 0 with the image's spacing, the image PSR with an
    origin: the label lost its geometry, so it is taken voxel for voxel (with the warning)."""
    spacing = (0.73, 0.73, 12.0)
    scanner = np.array([[0, 0, -12.0, 10], [-0.73, 0, 0, 120], [0, -0.73, 0, 90], [0, 0, 0, 1]])
    image = load_nifti(save(tmp_path / "img.nii.gz", qform=scanner, sform=scanner))
    label = load_nifti(save(tmp_path / "lab.nii.gz", qform=np.diag([*spacing, 1.0]),
                            sform=np.diag([*spacing, 1.0]), dtype=np.uint8))
    notes = GeometryNotes()
    aligned, agrees = align(image, label, notes=notes)
    assert not agrees and aligned is label
    assert "written without geometry" in notes.items[0][1]


def test_rotated_label_is_refused_even_with_geometry_image(tmp_path):
    image = load_nifti(save(tmp_path / "img.nii.gz", qform=oblique((0.73, 0.73, 12.0))))
    rotated = oblique((0.73, 0.73, 12.0), angle=0.3 + np.pi / 2)
    label = load_nifti(save(tmp_path / "lab.nii.gz", qform=rotated, sform=rotated))
    for mode in ("auto", "image"):
        with pytest.raises(DataError, match="lab.nii.gz: stored in orientation ALS"):
            align(image, label, mode=mode)


def test_evaluate_scores_a_prediction_stored_in_another_orientation_on_the_right_voxels(tmp_path):
    from medcl.evaluation.evaluate import evaluate_folders

    shape, affine = (8, 6, 3), np.diag([1.2, 1.2, 5.0, 1.0])
    gt = np.zeros(shape, np.uint8)
    gt[1:4, 1:5] = 1
    pred = np.zeros(shape, np.uint8)
    pred[2:4, 1:5] = 1  # Dice 2*8*3 / (12*3 + 8*3) = 0.8; its mirror along x scores 0
    for folder in ("gt", "ras", "las"):
        (tmp_path / folder).mkdir()
    _write(tmp_path / "gt" / "c.nii.gz", gt, affine)
    _write(tmp_path / "ras" / "c.nii.gz", pred, affine)
    stored, stored_affine = _stored_as(pred, affine, (0, 1, 2), (-1, 1, 1))
    _write(tmp_path / "las" / "c.nii.gz", stored, stored_affine)
    for folder in ("ras", "las"):
        summary = evaluate_folders(tmp_path / "gt", tmp_path / folder, class_values={"fg": 1},
                                   out_dir=tmp_path / f"{folder}_eval")
        assert summary["mean"]["fg"]["dice"] == pytest.approx(0.8), folder


def test_training_reads_a_label_stored_in_another_orientation_on_the_image_grid(tmp_path):
    """read_case (what train and convert read) gives the same class map for a label stored RAS
    and the same label stored PIL."""
    from medcl.data.datasets import Case
    from medcl.data.labels import LabelSpec
    from medcl.data.slices import read_case

    shape, affine = (6, 5, 3), oblique((1.1, 1.1, 7.0))
    labels = (np.arange(np.prod(shape)).reshape(shape) % 3).astype(np.uint8)
    _write(tmp_path / "img.nii.gz", labels.astype(np.float32), affine)
    stored, stored_affine = _stored_as(labels, affine, (1, 0, 2), (-1, 1, -1))
    _write(tmp_path / "lab.nii.gz", stored, stored_affine)
    spec = LabelSpec.from_dict({"labels": {"background": 0, "a": 1, "b": 2},
                                "channel_names": {"0": "MR"}})
    case = Case("c", (tmp_path / "img.nii.gz",), tmp_path / "lab.nii.gz")
    _, read = read_case(case, spec)
    np.testing.assert_array_equal(read, labels)


def test_ground_truth_written_without_geometry_scores_a_scanner_placed_prediction(tmp_path):
    """MSCMR's subject43 at evaluate: the ground truth is identity at 0 (written without
    geometry), the prediction carries the image's scanner geometry (PSR, origin far away): the
    ground truth lost its geometry, so the two are compared voxel for voxel (with the warning),
    not refused as two orientations."""
    spacing = (0.73, 0.73, 12.0)
    scanner = np.array([[0, 0, -12.0, 10], [-0.73, 0, 0, 120], [0, -0.73, 0, 90], [0, 0, 0, 1]])
    gt = load_nifti(save(tmp_path / "gt.nii.gz", qform=np.diag([*spacing, 1.0]),
                         sform=np.diag([*spacing, 1.0]), dtype=np.uint8))
    pred = load_nifti(save(tmp_path / "pred.nii.gz", qform=scanner, sform=scanner,
                           dtype=np.uint8))
    notes = GeometryNotes()
    aligned, agrees = align(gt, pred, notes=notes)
    assert not agrees and aligned is pred
    assert "the image's header was written without geometry" in notes.items[0][1]
