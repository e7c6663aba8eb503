"""The scribble simulator (medcl.data.scribble) and `medcl scribble`: hand-checkable shapes,
class agreement on generated and real data, determinism, options, and the CLI's files."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import real_data_root, write_nifti

from medcl.cli import main
from medcl.data.scribble import ScribbleOptions, scribble_volume
from medcl.data.synthetic import make_volume
from medcl.errors import ConfigError, DataError

IGNORE = 9
SIZE, CENTRE = 64, 31.5
ONE_PIXEL = dict(stroke_width_mm=0.5, background=False)


def _radius() -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.hypot(yy - CENTRE, xx - CENTRE)


def _stack(plane: np.ndarray, depth: int = 1) -> np.ndarray:
    return np.repeat(plane[..., None], depth, axis=2).astype(np.int64)


def disk(radius: float = 10.0) -> np.ndarray:
    """Class 1 inside ``radius`` pixels of the centre."""
    return _stack(_radius() < radius)


def ring(inner: float = 12.0, outer: float = 18.0, depth: int = 1) -> np.ndarray:
    """Class 1 between two radii (a myocardium-like ring 6 px thick), class 2 inside it."""
    r = _radius()
    return _stack(np.where(r < inner, 2, np.where(r < outer, 1, 0)), depth)


def _draw(labels, num_classes=3, spacing=(1.0, 1.0, 5.0), seed=0, **options):
    axis = int(np.argmax(spacing))                   # the slice axis: the coarse one
    return scribble_volume(labels, spacing, num_classes=num_classes, ignore_index=IGNORE,
                           options=ScribbleOptions(**options), seed=seed, slice_axis=axis)


def _angles_covered(stroke: np.ndarray, bins: int = 36) -> float:
    yy, xx = np.nonzero(stroke)
    angles = np.arctan2(yy - CENTRE, xx - CENTRE)
    return len(np.unique(np.floor((angles + np.pi) / (2 * np.pi) * bins))) / bins


def _assert_strokes_agree(scribbles: np.ndarray, dense: np.ndarray) -> None:
    stroked = scribbles != IGNORE
    assert stroked.any()
    np.testing.assert_array_equal(scribbles[stroked], dense[stroked])


def _span(stroke: np.ndarray) -> float:
    points = np.argwhere(stroke)
    return float(np.linalg.norm(points[:, None] - points[None], axis=-1).max())


def test_disk_gets_one_chord_covering_extent():
    # outline off, one line, margin 0: a diameter of the r=10 disk spans 19-20 px; extent 0.5
    # keeps about its central half (the centre is any point at 90 % of the depth: 8-11.5 px).
    options = dict(num_classes=2, outline_depth_mm=0, blob_lines=1, margin_mm=0, **ONE_PIXEL)
    full = _draw(disk(), extent=1.0, **options) == 1
    assert 18.5 <= _span(full) <= 20.0
    assert (full <= (disk() == 1)).all()
    assert 8.0 <= _span(_draw(disk(), extent=0.5, **options) == 1) <= 11.5


def test_disk_outline_lies_at_its_depth():
    # R = 10 mm >= outline_min_depth_mm: an outline 2 mm deep (radius 8, circumference ~50 px)
    # besides the two chords, which cross the radius 7-9 band at 4 places (a few pixels each)
    band = np.abs(_radius() - 8.0) <= 1.0
    s = _draw(disk(), num_classes=2, outline_depth_mm=2.0, outline_min_depth_mm=8.0, extent=1.0,
              **ONE_PIXEL)[..., 0] == 1
    assert _angles_covered(s & band) > 0.95 and (s & band).sum() >= 45
    # a shallower structure than outline_min_depth_mm: its chords only
    chords = _draw(disk(), num_classes=2, outline_min_depth_mm=11.0, extent=1.0,
                   **ONE_PIXEL)[..., 0] == 1
    assert 4 <= (chords & band).sum() <= 20


def test_ring_stroke_follows_its_midline_and_extent():
    # the ring is thin (area / (2R)^2 ~ 10): one stroke along radius 15
    options = dict(classes=(1,), medial_depth_share=1.0, **ONE_PIXEL)
    full = _draw(ring(), extent=1.0, **options)[..., 0] == 1
    assert np.abs(_radius()[full] - 15.0).max() <= 1.5
    assert _angles_covered(full) > 0.95
    half = _draw(ring(), extent=0.5, **options)[..., 0] == 1
    assert 0.4 <= _angles_covered(half) <= 0.65


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_medial_depth_share_puts_the_stroke_on_one_side(seed):
    # depth 3 at the midline; share 0.5 -> 1.5 px inside: radius 13.5 (inner side) or 16.5
    stroke = _draw(ring(), classes=(1,), medial_depth_share=0.5, extent=1.0, seed=seed,
                   **ONE_PIXEL)[..., 0] == 1
    radii = _radius()[stroke]
    inner, outer = np.abs(radii - 13.5) <= 1.0, np.abs(radii - 16.5) <= 1.0
    assert inner.all() or outer.all()
    assert _angles_covered(stroke) > 0.95


@pytest.mark.parametrize("thickness", [1, 2])
def test_vessel_gets_a_stroke_along_it(thickness):
    # a diagonal vessel 1 or 2 px thick, 40 px long: the stroke stays on it and spans 90 % of it
    plane = np.zeros((SIZE, SIZE), dtype=np.int64)
    for i in range(10, 50):
        plane[i, i:i + thickness] = 1
    stroke = _draw(_stack(plane), num_classes=2, **ONE_PIXEL)[..., 0] == 1
    assert (stroke <= (plane == 1)).all()
    assert 0.85 * 40 * np.sqrt(2) <= _span(stroke) <= 40 * np.sqrt(2)


def test_stroke_width_widens_within_the_structure():
    thin = _draw(ring(), classes=(1,), **ONE_PIXEL) == 1
    wide = _draw(ring(), classes=(1,), stroke_width_mm=3.0, background=False) == 1
    assert wide.sum() > 2 * thin.sum()
    assert (wide <= (ring() == 1)).all()


def test_classes_and_as_background_choose_what_gets_strokes():
    s = _draw(ring(), classes=(2,))
    assert not (s == 1).any() and (s == 2).any() and (s == 0).any()
    merged = _draw(ring(), as_background=(1,), background_distance_mm=(0.0, 0.0),
                   background_width_mm=0.5)
    assert not (merged == 1).any()
    assert ((merged == 0) & (ring() == 1)).any()       # background strokes run over the ring


def test_background_strokes_lie_at_the_chosen_distance():
    s = _draw(ring(), background_strokes=1, background_distance_mm=(3.0, 3.0),
              background_width_mm=0.5)
    radii = _radius()[s[..., 0] == 0]
    assert radii.size and np.abs(radii - (18.0 + 3.25)).max() <= 1.5
    assert not (_draw(ring(), background=False) == 0).any()


def test_slice_fraction_picks_that_share_of_slices():
    s = _draw(ring(depth=4), slice_fraction=0.5)
    stroked = (s != IGNORE).any(axis=(0, 1))
    assert stroked.sum() == 2


def test_same_seed_same_scribbles_other_seed_others():
    labels = ring(depth=3)
    np.testing.assert_array_equal(_draw(labels, seed=4), _draw(labels, seed=4))
    assert not np.array_equal(_draw(labels, seed=4), _draw(labels, seed=5))


def test_slice_axis_moves_the_slicing():
    labels = ring(depth=2)
    moved = _draw(np.moveaxis(labels, 2, 0), spacing=(5.0, 1.0, 1.0), seed=3)
    np.testing.assert_array_equal(np.moveaxis(moved, 0, 2), _draw(labels, seed=3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_hearts_every_stroke_voxel_has_its_class(seed):
    _, dense = make_volume(np.random.default_rng(seed), shape=(80, 80, 4))
    s = _draw(dense, num_classes=4, spacing=(1.6, 1.6, 8.0), seed=seed)
    _assert_strokes_agree(s, dense)
    assert set(np.unique(s)) == {0, 1, 2, 3, IGNORE}


def test_unlabelled_voxels_stay_unlabelled():
    labels = ring()
    labels[:, :20] = IGNORE
    s = _draw(labels)
    assert (s[:, :20] == IGNORE).all()


def test_bad_options_and_labels_are_named():
    with pytest.raises(ConfigError, match="extent must be in"):
        ScribbleOptions(extent=0.0)
    with pytest.raises(ConfigError, match="background_distance_mm"):
        ScribbleOptions(background_distance_mm=(5.0, 1.0))
    with pytest.raises(ConfigError, match=r"classes \[3\] are not foreground"):
        _draw(ring(), classes=(3,))
    with pytest.raises(DataError, match=r"values \[7\] outside"):
        _draw(np.full((4, 4, 1), 7))
    with pytest.raises(DataError, match="expected a 3D"):
        _draw(np.zeros((4, 4)))


MYOPS_DENSE = {0: 0, 200: 1, 500: 2, 600: 3, 1220: 4, 2221: 5}


def test_real_myops_every_stroke_voxel_has_its_class():
    root = real_data_root() / "MyoPS2020" / "train25_myops_gd"
    if not root.is_dir():
        pytest.skip(f"real MyoPS data not found at {root}")
    for case in (102, 125):
        img = nib.load(str(root / f"myops_training_{case}_gd.nii.gz"))
        raw = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
        dense = np.zeros(raw.shape, dtype=np.int64)
        for value, index in MYOPS_DENSE.items():
            dense[raw == value] = index
        s = _draw(dense, num_classes=6, spacing=img.header.get_zooms(), seed=case)
        _assert_strokes_agree(s, dense)
        assert {1, 2, 3}.issubset(np.unique(s))


@pytest.fixture
def dense_folder(tmp_path):
    folder = tmp_path / "dense"
    for case in ("a", "b"):
        write_nifti(folder / f"{case}.nii.gz", (ring(depth=2) * 100).astype(np.int16),
                    spacing=(0.8, 0.8, 6.0))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": {"background": 0, "Myo": 100, "LV": 200,
                                             "ignore": 7}}))
    return folder, labels


def test_cli_writes_scribbles_with_the_input_geometry(dense_folder, tmp_path):
    folder, labels = dense_folder
    out = tmp_path / "scribbles"
    assert main(["scribble", str(folder), str(out), "--labels", str(labels), "--seed", "1",
                 "--classes", "Myo"]) == 0
    for case in ("a", "b"):
        src, dst = nib.load(str(folder / f"{case}.nii.gz")), nib.load(str(out / f"{case}.nii.gz"))
        assert dst.shape == src.shape
        np.testing.assert_allclose(dst.affine, src.affine, atol=1e-5)
        np.testing.assert_allclose(dst.header.get_zooms(), src.header.get_zooms(), atol=1e-5)
        values = np.asanyarray(dst.dataobj)
        assert set(np.unique(values)) == {0, 100, 7}          # no LV: --classes Myo
        stroke = values == 100
        assert (np.asanyarray(src.dataobj)[stroke] == 100).all()


def test_cli_options_reach_the_simulator(dense_folder, tmp_path):
    folder, labels = dense_folder
    out = tmp_path / "scribbles"
    assert main(["scribble", str(folder), str(out), "--labels", str(labels), "--slice-fraction",
                 "0.5", "--no-background", "--as-background", "LV"]) == 0
    values = np.asanyarray(nib.load(str(out / "a.nii.gz")).dataobj)
    assert ((values != 7).any(axis=(0, 1))).sum() == 1          # one of the two slices
    assert set(np.unique(values)) == {100, 7}                    # no background, no LV strokes


def test_cli_never_overwrites_without_the_flag_nor_the_users_files(dense_folder, tmp_path,
                                                                   capsys):
    folder, labels = dense_folder
    out = tmp_path / "scribbles"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"mine")
    args = ["scribble", str(folder), str(out), "--labels", str(labels)]
    for extra in ([], ["--overwrite"]):  # a file medcl did not write: never replaced
        assert main(args + extra) == 2
        assert "a.nii.gz: exists and was not written by medcl" in capsys.readouterr().err
        assert (out / "a.nii.gz").read_bytes() == b"mine" and not (out / "b.nii.gz").exists()
    (out / "a.nii.gz").unlink()
    assert main(args) == 0
    assert main(args) == 2
    assert "a.nii.gz: output already exists (2 files); use --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert nib.load(str(out / "a.nii.gz")).shape == (SIZE, SIZE, 2)


def test_cli_needs_an_ignore_value_and_another_folder(dense_folder, tmp_path, capsys):
    folder, _ = dense_folder
    no_ignore = tmp_path / "no_ignore.json"
    no_ignore.write_text(json.dumps({"labels": {"background": 0, "Myo": 100, "LV": 200}}))
    assert main(["scribble", str(folder), str(tmp_path / "o"), "--labels", str(no_ignore)]) == 2
    assert "needs an 'ignore' value" in capsys.readouterr().err
    _, labels = dense_folder
    assert main(["scribble", str(folder), str(folder), "--labels", str(labels)]) == 2
    assert "must differ from the input folder" in capsys.readouterr().err


def test_cli_bad_option_is_a_one_line_error(dense_folder, tmp_path, capsys):
    folder, labels = dense_folder
    assert main(["scribble", str(folder), str(tmp_path / "o"), "--labels", str(labels),
                 "--background-distance-mm", "5", "2"]) == 2
    assert "background_distance_mm must be (low, high)" in capsys.readouterr().err
    assert main(["scribble", str(folder), str(tmp_path / "o"), "--labels", str(labels),
                 "--classes", "RV"]) == 2
    assert "unknown classes ['RV']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
