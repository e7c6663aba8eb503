"""DICOM series input: one series per folder, read into the same :class:`Volume` as NIfTI.

A case given as DICOM is a folder holding the files of one series (any file names; files that
are not DICOM are ignored). The series is read with SimpleITK (GDCM inside), which sorts the
slices by their position, applies the rescale slope and intercept, decodes compressed transfer
syntaxes (JPEG, JPEG 2000, RLE) and gives the geometry. SimpleITK is an optional dependency:
``pip install 'medcl[dicom]'``.

Geometry: DICOM (and SimpleITK) use LPS world coordinates, NIfTI (and nibabel) RAS, so the
voxel-to-world affine is ``diag(-1, -1, 1) @ direction @ diag(spacing)`` with origin
``diag(-1, -1, 1) @ origin``. The voxel array is transposed from SimpleITK's ``(Z, Y, X)`` to
medcl's ``(X, Y, Z)``; anything written from the volume (predictions) keeps this geometry, so
the NIfTI output lies on the DICOM grid in the scanner's world.
"""

from __future__ import annotations

import contextlib
import locale
import logging
import os
import uuid
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from medcl.data.io import (
    Volume,
    check_voxels,
    is_nifti,
    load_nifti,
    stack_channels,
    visible_entries,
)
from medcl.errors import DataError
from medcl.extras import require
from medcl.files import atomic_path

log = logging.getLogger(__name__)

DICOM_SUFFIX = ".dcm"
#: a DICOM Part 10 file has a 128-byte preamble, then these four bytes.
DICOM_MAGIC = b"DICM"
DICOM_MAGIC_OFFSET = 128
#: LPS (DICOM) -> RAS (NIfTI): negate the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_SPATIAL_DIMS = 3
#: root of UUID-derived DICOM UIDs (ISO/IEC 9834-8, DICOM PS3.5 B.2).
UUID_UID_ROOT = "2.25."
#: DICOM tags (group|element, as SimpleITK's metadata keys) written by :func:`save_series`.
_TAGS = {"study": "0020|000d", "series": "0020|000e", "instance_uid": "0008|0018",
         "modality": "0008|0060", "position": "0020|0032", "orientation": "0020|0037",
         "instance_number": "0020|0013", "frame_of_reference": "0020|0052",
         "slice_thickness": "0018|0050"}


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (the ``DICM`` marker, or a ``.dcm`` name)."""
    if path.suffix.lower() == DICOM_SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    except OSError:
        return False
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def is_series_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM file (not in sub-folders)."""
    return path.is_dir() and any(p.is_file() and is_dicom_file(p) for p in path.iterdir())


def volume_files(folder: Path) -> list[Path]:
    """Sorted cases of ``folder``: its NIfTI files and its sub-folders holding a DICOM series.

    A sub-folder's name is its case id, as a NIfTI file's stem is. If ``folder`` itself holds
    the DICOM files of one series, that folder is the only case.

    Raises:
        DataError: the folder is missing or holds neither NIfTI files nor DICOM series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    if is_series_folder(folder):
        return [folder]
    found = [p for p in visible_entries(folder)
             if (p.is_file() and is_nifti(p)) or is_series_folder(p)]
    if not found:
        raise DataError(f"{folder}: folder holds no .nii/.nii.gz files and no DICOM series "
                        "folders")
    return found


def _series_ids(sitk, folder: Path) -> tuple[str, ...]:
    ids = tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise DataError(f"{folder}: no readable DICOM series")
    if len(ids) > 1:
        raise DataError(f"{folder}: holds {len(ids)} DICOM series (SeriesInstanceUID "
                        f"{', '.join(ids)}); put each series in its own folder")
    return ids


def series_files(folder: str | os.PathLike) -> tuple[str, list[Path]]:
    """The SeriesInstanceUID of the one series in ``folder`` and its files in slice order: file
    ``z`` holds slice ``z`` of :func:`load_series`'s volume.

    Raises:
        DataError: the folder holds no series or several.
    """
    sitk = require("SimpleITK", extra="dicom", feature="DICOM input")
    (series_id,) = _series_ids(sitk, Path(folder))
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
    return series_id, [Path(name) for name in names]


def series_affine(spacing: Sequence[float], origin: Sequence[float],
                  direction: Sequence[float]) -> np.ndarray:
    """RAS voxel-to-world ``(4, 4)`` affine from SimpleITK's LPS geometry.

    Args:
        spacing: voxel size in mm along ``(X, Y, Z)``.
        origin: LPS position in mm of voxel ``(0, 0, 0)``.
        direction: the 9 entries of the LPS direction cosine matrix, row-major (SimpleITK's
            ``GetDirection()``); column ``i`` is the world direction of voxel axis ``i``.
    """
    rotation = np.asarray(direction, dtype=np.float64).reshape(_SPATIAL_DIMS, _SPATIAL_DIMS)
    affine = np.eye(_SPATIAL_DIMS + 1)
    affine[:3, :3] = LPS_TO_RAS @ rotation @ np.diag(np.asarray(spacing, dtype=np.float64))
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=np.float64)
    return affine


def load_series(folder: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read the one DICOM series in ``folder`` as a 3D :class:`Volume` ``(X, Y, Z)``.

    Args:
        folder: folder of the series' files.
        kind: ``"image"`` (float32) or ``"label"`` (integer values, int64), as
            :func:`medcl.data.io.load_nifti`.

    Raises:
        DataError: the folder holds no series, several series, or an unreadable one.
        ConfigError: SimpleITK is not installed.
    """
    folder = Path(folder)
    sitk = require("SimpleITK", extra="dicom", feature="DICOM input")
    series_id, files = series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        message = " ".join(str(exc).split())
        raise DataError(f"{folder}: unreadable DICOM series ({message})") from exc
    if image.GetDimension() != _SPATIAL_DIMS or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{folder}: expected a 3D single-component series, got "
                        f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} "
                        "components per voxel")
    spacing = tuple(float(v) for v in image.GetSpacing())
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise DataError(f"{folder}: voxel size {spacing} mm is not positive; fix the series' "
                        "PixelSpacing/slice positions (medcl will not guess a spacing)")
    data = check_voxels(sitk.GetArrayFromImage(image).transpose(2, 1, 0), kind, folder)
    affine = series_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    header = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine).header
    header.set_data_shape(data.shape)
    header.set_zooms(tuple(float(s) for s in image.GetSpacing()))
    log.debug("%s: DICOM series %s, shape %s, spacing %s", folder, series_id, data.shape,
              image.GetSpacing())
    return Volume(data=data, affine=affine, header=header, path=folder)


def load_volume(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """A NIfTI file or a DICOM series folder as a 3D :class:`Volume`."""
    path = Path(path)
    return load_series(path, kind=kind) if path.is_dir() else load_nifti(path, kind=kind)


def load_case_image(paths: Sequence[str | os.PathLike]) -> Volume:
    """One image ``(X, Y, Z, C)`` from channel files or DICOM series folders on one grid."""
    if not paths:
        raise ValueError("load_case_image needs at least one path")
    return stack_channels([load_volume(p, kind="image") for p in paths])


@contextlib.contextmanager
def _keep_locale():
    """Restore the process locale afterwards: GDCM's writer switches it to "C" for good, which
    would make later text writes that rely on the locale's encoding fail on non-ASCII text."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _new_uid() -> str:
    return UUID_UID_ROOT + str(uuid.uuid4().int)


def save_series(folder: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *,
                modality: str = "MR", series_uid: str | None = None) -> list[Path]:
    """Write an integer volume ``(X, Y, Z)`` as a DICOM series, one ``slice{z:04d}.dcm`` per z.

    The inverse of :func:`load_series` (geometry from the RAS ``affine``); used to make test
    data and to try the DICOM path without a scanner. Values are stored as int16.

    Returns:
        The written files, in slice order.
    """
    sitk = require("SimpleITK", extra="dicom", feature="DICOM output")
    data = np.asarray(data)
    if data.ndim != _SPATIAL_DIMS or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"save_series needs an integer (X, Y, Z) array, got {data.dtype} "
                         f"{data.shape}")
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image = sitk.GetImageFromArray(data.astype(np.int16).transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]).tolist())
    image.SetDirection((lps / spacing).ravel().tolist())
    direction = image.GetDirection()
    orientation = [direction[row * _SPATIAL_DIMS + col] for col in (0, 1) for row in range(3)]
    series_uid = series_uid or _new_uid()
    tags = {"study": _new_uid(), "series": series_uid, "modality": modality,
            "frame_of_reference": _new_uid(), "slice_thickness": f"{spacing[2]:.10g}",
            "orientation": "\\".join(f"{v:.10g}" for v in orientation)}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # use the UIDs set below
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for z in range(data.shape[2]):
        plane = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        slice_tags = {**tags, "instance_uid": f"{series_uid}.{z + 1}",
                      "instance_number": str(z + 1),
                      "position": "\\".join(f"{v:.10g}" for v in position)}
        for key, value in slice_tags.items():
            plane.SetMetaData(_TAGS[key], value)
        path = folder / f"slice{z:04d}{DICOM_SUFFIX}"
        with atomic_path(path) as tmp, _keep_locale():
            writer.SetFileName(str(tmp))
            writer.Execute(plane)
        written.append(path)
    return written
