"""Property-based and fuzz tests (issue #10, robustness beyond the list).

* NIfTI write -> read keeps data and geometry, over random shapes, spacings, orientations and
  label maps.
* preprocess -> inverse (what prediction does: labels resampled to the target spacing, one-hot,
  resampled back, argmax) keeps a label map except next to a class boundary: every changed voxel
  lies within ``ceil(max(r, 1/r)) + 1`` voxels (in-plane) of a voxel of another class, where
  ``r`` is the resampling ratio. That is the interpolation error we state.
* random bytes and mangled headers given to the reader: always a ``DataError`` or a volume,
  never another exception, within a time bound.
"""

import math
import time

import nibabel as nib
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medcl.data.io import MAX_VOXELS, Volume, load_nifti, save_nifti
from medcl.data.preprocessing import PreprocessConfig, labels_to_slices, restore_probs
from medcl.errors import DataError

NIFTI1_HEADER_BYTES = 348
#: a read of a mangled tiny file must end well within this (seconds).
READ_TIME_BOUND = 2.0
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

shapes = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4))
spacings = st.tuples(*[st.floats(0.1, 8.0, allow_nan=False)] * 3)
angles = st.tuples(*[st.floats(-math.pi, math.pi, allow_nan=False)] * 3)


def _rotation(a, b, c):
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(spacing, angle, flip, offset):
    affine = np.eye(4)
    affine[:3, :3] = _rotation(*angle) @ np.diag(spacing) @ np.diag(flip)
    affine[:3, 3] = offset
    return affine


@PROPERTY
@given(shape=shapes, spacing=spacings, angle=angles,
       flip=st.tuples(*[st.sampled_from([1.0, -1.0])] * 3),
       offset=st.tuples(*[st.floats(-500, 500, allow_nan=False)] * 3),
       num_classes=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_label_map_write_read_keeps_data_and_geometry(tmp_path, shape, spacing, angle, flip,
                                                      offset, num_classes, seed):
    labels = np.random.default_rng(seed).integers(0, num_classes, shape)
    affine = _affine(spacing, angle, flip, offset)
    reference = Volume(np.zeros(shape, np.float32), affine,
                       nib.Nifti1Image(np.zeros(shape, np.float32), affine).header)
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    path = tmp_path / "l.nii.gz"
    save_nifti(path, labels, reference, dtype=dtype)
    back = load_nifti(path, kind="label")
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, affine, atol=1e-4 * max(1.0, np.abs(offset).max()))
    np.testing.assert_allclose(back.spacing, spacing, rtol=1e-5)


@PROPERTY
@given(shape=st.tuples(st.integers(4, 40), st.integers(4, 40), st.integers(1, 3)),
       spacing=st.tuples(st.floats(0.5, 2.0), st.floats(0.5, 2.0)),
       target=st.floats(0.5, 2.0), num_classes=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_preprocess_then_inverse_changes_labels_only_at_boundaries(shape, spacing, target,
                                                                   num_classes, seed):
    rng = np.random.default_rng(seed)
    # blocky label maps (upsampled noise), as segmentations are, not salt-and-pepper noise
    coarse = rng.integers(0, num_classes, (max(1, shape[0] // 4), max(1, shape[1] // 4),
                                           shape[2]))
    zoom = (shape[0] / coarse.shape[0], shape[1] / coarse.shape[1], 1)
    labels = ndimage.zoom(coarse, zoom, order=0)[:shape[0], :shape[1]]
    labels = np.pad(labels, [(0, shape[0] - labels.shape[0]), (0, shape[1] - labels.shape[1]),
                             (0, 0)], mode="edge")
    slices = labels_to_slices(labels, spacing, PreprocessConfig(target_spacing=target))
    probs = torch.nn.functional.one_hot(slices, num_classes).permute(0, 3, 1, 2).float()
    back = restore_probs(probs, labels.shape[:2]).argmax(1).permute(1, 2, 0).numpy()
    ratio = max(max(s / target, target / s) for s in spacing)
    radius = math.ceil(ratio) + 1
    footprint = np.ones((2 * radius + 1, 2 * radius + 1, 1), bool)
    boundary = (ndimage.maximum_filter(labels, footprint=footprint, mode="nearest")
                != ndimage.minimum_filter(labels, footprint=footprint, mode="nearest"))
    changed = back != labels
    assert not (changed & ~boundary).any(), f"{int((changed & ~boundary).sum())} interior voxels"


def _valid_file(tmp_path, gz):
    path = tmp_path / ("v.nii.gz" if gz else "v.nii")
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.diag([2, 2, 3, 1]))
    nib.save(img, str(path))
    return path


def _read_bounded(path):
    start = time.monotonic()
    try:
        volume = load_nifti(path)
        assert volume.data.size <= MAX_VOXELS
        assert all(s > 0 for s in volume.spacing)
    except DataError as exc:
        assert str(path) in str(exc)
    assert time.monotonic() - start < READ_TIME_BOUND


@FUZZ
@given(data=st.binary(max_size=2048), gz=st.booleans())
def test_random_bytes_give_a_data_error(tmp_path, data, gz):
    path = tmp_path / ("r.nii.gz" if gz else "r.nii")
    path.write_bytes(data)
    _read_bounded(path)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, NIFTI1_HEADER_BYTES - 1), st.integers(0, 255)),
                      min_size=1, max_size=12),
       gz=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 480)))
def test_mangled_headers_give_a_data_error_or_a_checked_volume(tmp_path, edits, gz, cut):
    import gzip

    path = _valid_file(tmp_path, gz=False)
    raw = bytearray(path.read_bytes())
    for offset, value in edits:
        raw[offset] = value
    raw = bytes(raw[:cut] if cut is not None else raw)
    target = tmp_path / ("m.nii.gz" if gz else "m.nii")
    target.write_bytes(gzip.compress(raw) if gz else raw)
    _read_bounded(target)
