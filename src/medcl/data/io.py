"""NIfTI reading and writing.

Volumes are held as :class:`Volume`: a numpy array in nibabel's voxel order ``(X, Y, Z)`` (or
``(X, Y, Z, C)`` for several channels stacked by :func:`load_image`), plus the affine and header of
the file they came from, so that anything written back keeps the input's geometry.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from medcl.errors import DataError
from medcl.files import atomic_path

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class Volume:
    """A 3D volume and its geometry.

    Attributes:
        data: voxel array ``(X, Y, Z)``, or ``(X, Y, Z, C)`` for a multi-channel image.
        affine: ``(4, 4)`` voxel-to-world matrix.
        header: the NIfTI header of the source file (copied).
        path: the file the volume was read from (the first channel's file for multi-channel).
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(X, Y, Z)``."""
        zooms = self.header.get_zooms()[:3]
        return tuple(float(z) for z in zooms)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape[:3])


def case_stem(path: str | os.PathLike) -> str:
    """File name without its NIfTI suffix (``a/b/x_DE.nii.gz`` -> ``x_DE``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read one 3D NIfTI file.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` (float32, must be finite) or ``"label"`` (integer-valued, returned as
            int64).

    Raises:
        DataError: the file is missing, not NIfTI, truncated, not 3D, has non-finite
            intensities, or (for labels) holds non-integer values.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, zlib.error,
            gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    return Volume(data=check_voxels(raw, kind, path),
                  affine=np.asarray(img.affine, dtype=np.float64), header=img.header.copy(),
                  path=path)


def check_voxels(raw: np.ndarray, kind: str, path: str | os.PathLike) -> np.ndarray:
    """Validate a voxel array read from ``path`` and return it as ``kind`` wants it.

    Args:
        raw: ``(X, Y, Z)`` or ``(X, Y, Z, 1)`` array as read.
        kind: ``"image"`` (float32, must be finite) or ``"label"`` (integer-valued -> int64).

    Raises:
        DataError: naming ``path``: not 3D, non-finite intensities, or non-integer labels.
    """
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {tuple(raw.shape)}")
    if kind == "image":
        data = raw.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).sum())
            raise DataError(f"{path}: {bad} voxels are NaN or infinite")
    else:
        if np.issubdtype(raw.dtype, np.floating):
            if not np.isfinite(raw).all():
                raise DataError(f"{path}: label map holds NaN or infinite values")
            rounded = np.rint(raw)
            if np.abs(raw - rounded).max() > 1e-3:
                raise DataError(f"{path}: label map holds non-integer values")
            raw = rounded
        data = raw.astype(np.int64)
    return data


def load_image(paths: Sequence[str | os.PathLike]) -> Volume:
    """Read one image of one or more channel files (same grid) into ``(X, Y, Z, C)``.

    Raises:
        DataError: a channel is unreadable or its shape or affine differs from the first one.
    """
    if not paths:
        raise ValueError("load_image needs at least one file")
    return stack_channels([load_nifti(p, kind="image") for p in paths])


def stack_channels(vols: Sequence[Volume]) -> Volume:
    """Stack single-channel volumes on one grid into ``(X, Y, Z, C)`` with the first's geometry.

    Raises:
        DataError: a channel's shape or affine differs from the first one.
    """
    first = vols[0]
    for vol in vols[1:]:
        check_same_geometry(first, vol)
    data = np.stack([v.data for v in vols], axis=-1)
    return Volume(data=data, affine=first.affine, header=first.header, path=first.path)


def check_same_geometry(ref: Volume, other: Volume, *, atol: float = 1e-3,
                        strict_affine: bool = True) -> bool:
    """Check that ``other`` lies on ``ref``'s voxel grid.

    Shapes must be equal. With ``strict_affine`` the affines must agree too; without it, a
    different affine with the same shape and voxel spacing (a header that lost its orientation,
    as in some public releases) only logs a warning, and the voxel arrays are compared as they
    are.

    Returns:
        whether the affines agree.

    Raises:
        DataError: naming ``other.path``, on a shape (or, strictly, affine or spacing) mismatch.
    """
    if ref.shape != other.shape:
        raise DataError(f"{other.path}: shape {other.shape} differs from {ref.path} {ref.shape}")
    if np.allclose(ref.affine, other.affine, atol=atol, rtol=1e-4):
        return True
    if strict_affine or not np.allclose(ref.spacing, other.spacing, rtol=1e-3):
        raise DataError(f"{other.path}: affine differs from {ref.path}")
    log.warning("%s: affine differs from %s (same shape and spacing); comparing voxel arrays",
                other.path, ref.path)
    return False


def save_nifti(path: str | os.PathLike, data: np.ndarray, reference: Volume, *,
               dtype: np.dtype | type | None = None) -> None:
    """Write ``data`` with ``reference``'s affine and header, atomically.

    Args:
        path: output file (``.nii.gz`` or ``.nii``).
        data: array whose first three axes match ``reference.shape``.
        reference: the volume whose geometry the output keeps.
        dtype: on-disk type; integer types write a label map (scaling removed).
    """
    if tuple(data.shape[:3]) != reference.shape:
        raise ValueError(f"data shape {data.shape} does not match reference {reference.shape}")
    dtype = np.dtype(dtype or data.dtype)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), reference.affine, header)
    if np.issubdtype(dtype, np.integer):
        img.header.set_slope_inter(1, 0)
    img.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    img.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
