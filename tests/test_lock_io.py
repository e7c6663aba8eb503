"""Pinning tests: a failing writer leaves the earlier file byte for byte and no temporary."""

from __future__ import annotations

import os
import pathlib

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from medcl.data.io import load_nifti, save_nifti
from medcl.files import atomic_path, atomic_write_text

OLD = b"earlier content \x00\x01 that must survive\n"


def _listing(folder):
    return sorted(os.listdir(folder))


def test_atomic_path_writer_fails_after_partial_write(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(OLD)
    seen = []
    with pytest.raises(RuntimeError, match="disk full halfway"):
        with atomic_path(target) as tmp:
            seen.append(tmp)
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_bytes(b"partial new con")
            raise RuntimeError("disk full halfway")
    assert target.read_bytes() == OLD
    assert not seen[0].exists()
    assert _listing(tmp_path) == ["result.json"]


def test_atomic_path_success_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(OLD)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert _listing(tmp_path) == ["result.json"]


def test_atomic_path_temporary_keeps_the_nifti_suffix(tmp_path):
    with atomic_path(tmp_path / "case.nii.gz") as tmp:
        assert tmp.name.startswith(".case.nii.gz.") and tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"x")


def test_atomic_write_text_writer_fails_after_partial_write(tmp_path, monkeypatch):
    target = tmp_path / "notes.txt"
    target.write_bytes(OLD)
    real_write_text = pathlib.Path.write_text

    def failing_write_text(self, text, *args, **kwargs):
        real_write_text(self, text[:5], *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write_text(target, "a much longer replacement text")
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert _listing(tmp_path) == ["notes.txt"]


def test_save_nifti_writer_fails_after_partial_write(tmp_path, monkeypatch):
    ref_path = write_nifti(tmp_path / "ref" / "img.nii.gz", np.ones((6, 5, 2), np.float32))
    reference = load_nifti(ref_path)
    out_dir = tmp_path / "out"
    target = out_dir / "pred.nii.gz"
    save_nifti(target, np.zeros((6, 5, 2)), reference, dtype=np.uint8)
    before = target.read_bytes()
    written_to = []

    def failing_save(img, filename, *args, **kwargs):
        written_to.append(filename)
        with open(filename, "wb") as handle:
            handle.write(b"\x1f\x8b partial gzip")
        raise OSError("write failed halfway")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="write failed halfway"):
        save_nifti(target, np.ones((6, 5, 2)), reference, dtype=np.uint8)
    monkeypatch.undo()
    assert written_to and os.path.dirname(written_to[0]) == str(out_dir)
    assert os.path.basename(written_to[0]) != "pred.nii.gz"  # it wrote to a temporary
    assert target.read_bytes() == before
    assert _listing(out_dir) == ["pred.nii.gz"]
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(target)).dataobj), 0)
