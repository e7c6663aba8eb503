"""Pinning tests: keep_largest_component's connectivity."""

from __future__ import annotations

import numpy as np

from medcl.inference.postprocessing import keep_largest_component

BIG = [(1, 1, 1), (1, 2, 1), (1, 3, 1), (1, 4, 1), (2, 4, 1)]  # 5 face-connected voxels
SMALL = [(5, 6, 2), (5, 6, 3)]  # 2 face-connected voxels, far from BIG


def _labels(extra):
    labels = np.zeros((7, 8, 5), np.int64)
    for idx in BIG + SMALL + [extra]:
        labels[idx] = 1
    labels[6, 0, 0] = 2  # a single class-2 voxel: the largest of its class, kept
    return labels


def _expected():
    out = np.zeros((7, 8, 5), np.int64)
    for idx in BIG:
        out[idx] = 1
    out[6, 0, 0] = 2
    return out


def test_edge_diagonal_voxel_is_a_separate_component():
    """Connectivity is 6 (faces only: ``generate_binary_structure(3, 1)``). A voxel sharing
    only an edge with the 5-voxel component ((2, 0, 1) touches (1, 1, 1) diagonally in-plane)
    is its own component and is removed, as is the 2-voxel component; with 18- or
    26-connectivity it would survive."""
    out = keep_largest_component(_labels((2, 0, 1)), num_classes=3)
    np.testing.assert_array_equal(out, _expected())


def test_corner_diagonal_voxel_is_a_separate_component():
    """A voxel sharing only a corner with the component ((0, 0, 0) vs (1, 1, 1)) is removed."""
    out = keep_largest_component(_labels((0, 0, 0)), num_classes=3)
    np.testing.assert_array_equal(out, _expected())


def test_slice_neighbour_along_z_is_connected():
    """Face neighbours along Z join the component (3D, not per slice): (1, 1, 0) is kept."""
    labels = _labels((1, 1, 0))
    before = labels.copy()
    out = keep_largest_component(labels, num_classes=3)
    expected = _expected()
    expected[1, 1, 0] = 1
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(labels, before)  # the input is not modified in place
    assert (out == 1).sum() == 6 and (labels == 1).sum() == 8
