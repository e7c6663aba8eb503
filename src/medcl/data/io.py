"""NIfTI reading and writing.

Volumes are held as :class:`Volume`: a numpy array in nibabel's voxel order ``(X, Y, Z)`` (or
``(X, Y, Z, C)`` for several channels stacked by :func:`load_image`), plus the affine and header of
the file they came from, so that anything written back keeps the input's geometry.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError

from medcl.errors import DataError
from medcl.files import atomic_path

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: the largest volume medcl reads (voxels over all channels): 2**30, 4 GiB as float32.
MAX_VOXELS = 2**30
GZIP_TRAILER_BYTES = 8  # CRC32 + ISIZE
GZIP_ISIZE_OFFSET = 4
GZIP_ISIZE_BYTES = 4
GZIP_ISIZE_MODULUS = 2**32
GZIP_CHUNK_BYTES = 2**24
#: what nibabel and numpy raise on a corrupt, truncated or mangled file.
READ_ERRORS = (ImageFileError, HeaderDataError, EOFError, OSError, ValueError, TypeError,
               IndexError, OverflowError, MemoryError, struct.error, zlib.error)


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


def visible_entries(folder: Path) -> list[Path]:
    """Sorted entries of ``folder`` that can be cases: hidden names (macOS ``._case.nii.gz``,
    medcl's own ``.name.XXXXXXXX.tmp.nii.gz`` temporaries) are left out, and a dangling symlink
    is left out with a warning naming it."""
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_symlink() and not path.exists():
            log.warning("%s: dangling symlink (points to %s); skipped", path, os.readlink(path))
            continue
        entries.append(path)
    return entries


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.endswith(NIFTI_SUFFIXES)


def _raw_header(path: Path, header_class: type) -> nib.Nifti1Header:
    """The header exactly as stored (nibabel's loader silently "fixes" some fields)."""
    with ImageOpener(str(path), "rb") as fh:
        return header_class.from_fileobj(fh, check=False)


def _holds_bytes(path: Path, needed: int) -> int | None:
    """``None`` if ``path`` holds at least ``needed`` bytes (decompressed), else how many it holds.

    For gzip the trailer's size field is tried first; a multi-member file (bgzip) can understate
    it, so then the stream is counted, stopping as soon as ``needed`` is reached.
    """
    size = path.stat().st_size
    if not path.name.endswith(".gz"):
        return None if size >= needed else size
    if size >= GZIP_TRAILER_BYTES:
        with path.open("rb") as fh:
            fh.seek(-GZIP_TRAILER_BYTES + GZIP_ISIZE_OFFSET, os.SEEK_END)
            isize = int.from_bytes(fh.read(GZIP_ISIZE_BYTES), "little")  # size mod 2**32
        if isize >= needed or needed >= GZIP_ISIZE_MODULUS:
            return None
    count = 0
    with gzip.open(path, "rb") as fh:
        while count < needed:
            chunk = fh.read(GZIP_CHUNK_BYTES)
            if not chunk:
                return count
            count += len(chunk)
    return None


def check_header(path: Path, img: nib.Nifti1Image) -> None:
    """Refuse what would crash, hang or silently mislead later: a voxel count over
    :data:`MAX_VOXELS`, fewer stored bytes than the header promises, or a voxel size <= 0 or
    non-finite (nibabel would silently read 0 as 1 mm).

    Raises:
        DataError: naming ``path`` and the field.
    """
    header = img.header
    shape = tuple(int(s) for s in header.get_data_shape())
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if voxels > MAX_VOXELS:
        raise DataError(f"{path}: header shape {shape} has {voxels} voxels, more than the "
                        f"{MAX_VOXELS} medcl reads")
    needed = int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize
    stored = _holds_bytes(path, needed)
    if stored is not None:
        raise DataError(f"{path}: not a readable NIfTI file (truncated: the header promises "
                        f"{needed} bytes, the file holds {stored})")
    pixdim = np.asarray(_raw_header(path, type(header))["pixdim"], dtype=np.float64)
    spatial = pixdim[1:1 + min(len(shape), 3)]
    if not (np.isfinite(spatial).all() and (spatial > 0).all()):
        shown = [float(f"{v:.6g}") for v in spatial]
        raise DataError(f"{path}: voxel size (pixdim) {shown} must be > 0 and finite; "
                        "fix the header (medcl will not guess a spacing)")


def open_nifti(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file and check its header; the one way medcl opens a NIfTI file.

    The voxel data is not read (``img.dataobj`` is a proxy), so this is cheap for header-only
    uses such as the median spacing.

    Raises:
        DataError: the file is missing, not NIfTI, its header is corrupt, it is truncated or
            its voxel size is not positive (see :func:`check_header`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with nib.imageglobals.LoggingOutputSuppressor():  # its "fixes" become our errors
            img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(f"{path}: not a NIfTI file ({type(img).__name__})")
        check_header(path, img)
    except READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    return img


def nifti_spacing(path: str | os.PathLike) -> tuple[float, ...]:
    """Voxel size in mm of a checked NIfTI file, from its header only."""
    return tuple(float(z) for z in open_nifti(path).header.get_zooms()[:3])


def load_nifti(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read one 3D NIfTI file through :func:`open_nifti`.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` (float32, must be finite) or ``"label"`` (integer-valued, returned as
            int64).

    Raises:
        DataError: the file is missing, not NIfTI, corrupt or truncated, has a voxel size
            <= 0, is not 3D, has non-finite intensities, or (for labels) holds non-integer
            values.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    img = open_nifti(path)
    try:
        raw = np.asanyarray(img.dataobj)
    except READ_ERRORS as exc:
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
        if data.size and data.min() == data.max():
            log.warning("%s: every voxel has the value %g (an empty or constant image)",
                        path, float(data.flat[0]))
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
