"""The page's drawing values and the scribble maps on disk.

The page (NiiVue) draws ``uint8`` pen values: ``0`` is unlabelled and class index ``k`` is pen
``k + 1`` (so the background class has its own pen, distinct from "not scribbled"). On disk a
scribble map holds the dataset's label values and its ignore value (:class:`LabelSpec`).
"""

from __future__ import annotations

import gzip
import re
import zlib

import nibabel as nib
import numpy as np

from medcl.data.labels import LabelSpec
from medcl.errors import ConfigError, DataError

#: pen value of unlabelled voxels on the page
UNLABELLED_PEN = 0
GZIP_MAGIC = b"\x1f\x8b"
#: bytes a NIfTI-1 header plus extensions may add to the voxel data of an upload
HEADER_ALLOWANCE = 64 * 1024
#: widest voxel type an upload may use (float64)
MAX_BYTES_PER_VOXEL = 8


class UploadTooLarge(DataError):
    """An upload is larger than any drawing of the case's image can be."""


class ShapeMismatch(DataError):
    """An upload does not have the case image's voxel grid."""


def require_ignore(spec: LabelSpec, source: str) -> None:
    """Scribbles need an unlabelled value; :class:`ConfigError` naming ``source`` otherwise."""
    if spec.ignore_value is None:
        raise ConfigError(f"{source}: the label definition has no 'ignore' value; scribbles "
                          "need one for unlabelled voxels (e.g. \"ignore\": 4)")


def scribble_dtype(spec: LabelSpec) -> type:
    """Smallest on-disk integer type holding every class value and the ignore value."""
    top = max([*spec.label_values, spec.ignore_value or 0])
    return np.uint8 if top <= np.iinfo(np.uint8).max else (
        np.uint16 if top <= np.iinfo(np.uint16).max else np.int32)


def labels_to_pens(values: np.ndarray, spec: LabelSpec, *, source: str) -> np.ndarray:
    """On-disk scribble values ``(X, Y, Z)`` -> pen values (``uint8``; 0 = unlabelled)."""
    indices = spec.to_indices(values, source=source)
    return np.where(indices == spec.ignore_index, UNLABELLED_PEN, indices + 1).astype(np.uint8)


def pens_to_labels(pens: np.ndarray, spec: LabelSpec, *, source: str) -> np.ndarray:
    """Pen values ``(X, Y, Z)`` -> on-disk scribble values.

    Raises:
        DataError: naming ``source``, if a pen value is above the number of classes.
    """
    top = int(pens.max(initial=0))
    if pens.min(initial=0) < 0 or top > spec.num_classes:
        raise DataError(f"{source}: drawing values must be 0 (unlabelled) .. {spec.num_classes}, "
                        f"got {top}")
    lut = np.asarray([spec.ignore_value, *spec.label_values], dtype=np.int64)
    return lut[pens.astype(np.int64)]


def class_counts(pens: np.ndarray, spec: LabelSpec) -> dict[str, int]:
    """Scribbled voxels per class name."""
    counts = np.bincount(pens.ravel(), minlength=spec.num_classes + 1)
    return {name: int(counts[k + 1]) for k, name in enumerate(spec.class_names)}


def scribbled_slices(pens: np.ndarray) -> list[int]:
    """Indices along ``Z`` of the slices that hold at least one scribbled voxel."""
    return np.flatnonzero((pens != UNLABELLED_PEN).any(axis=(0, 1))).tolist()


def max_upload_bytes(shape: tuple[int, int, int]) -> int:
    """The largest upload a drawing of an image of ``shape`` can need."""
    return int(np.prod(shape)) * MAX_BYTES_PER_VOXEL + HEADER_ALLOWANCE


def _gunzip(body: bytes, limit: int, source: str) -> bytes:
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        raw = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DataError(f"{source}: not valid gzip data ({exc})") from None
    if len(raw) > limit:
        raise UploadTooLarge(f"{source}: decompressed upload exceeds {limit} bytes")
    return raw


def decode_drawing(body: bytes, shape: tuple[int, int, int], *, source: str) -> np.ndarray:
    """The pen values ``(X, Y, Z)`` of an uploaded NIfTI drawing (gzipped or not).

    Only the voxel array is used: the saved file takes the image's geometry, never the upload's.

    Raises:
        UploadTooLarge: the (decompressed) upload exceeds :func:`max_upload_bytes`.
        ShapeMismatch: its voxel grid is not ``shape``.
        DataError: it is not a NIfTI-1 volume of integer values.
    """
    limit = max_upload_bytes(shape)
    if len(body) > limit:
        raise UploadTooLarge(f"{source}: upload of {len(body)} bytes exceeds {limit} bytes")
    raw = _gunzip(body, limit, source) if body[:2] == GZIP_MAGIC else body
    try:
        data = np.asanyarray(nib.Nifti1Image.from_bytes(raw).dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, gzip.BadGzipFile,
            nib.spatialimages.HeaderDataError, nib.wrapstruct.WrapStructError) as exc:
        raise DataError(f"{source}: not a NIfTI-1 drawing ({type(exc).__name__}: {exc})") from None
    if data.ndim == len(shape) + 1 and data.shape[-1] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape):
        raise ShapeMismatch(f"{source}: drawing shape {tuple(data.shape)} differs from the "
                            f"image's {tuple(shape)}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or np.any(data != np.rint(data)):
            raise DataError(f"{source}: drawing holds non-integer values")
    return np.asarray(data).astype(np.int64)


#: colours of the classes when the dataset description gives none (background first)
DEFAULT_COLORS = ("#4c72b0", "#e6194b", "#3cb44b", "#ffe119", "#f58231", "#911eb4", "#42d4f4",
                  "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000")
_HEX_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


def class_colors(spec: LabelSpec, description: dict, *, source: str) -> list[str]:
    """``#rrggbb`` per class index: the description's optional ``"colors"`` object (class name
    -> colour), else :data:`DEFAULT_COLORS`.

    Raises:
        ConfigError: naming ``source``, for an unknown class name or a malformed colour.
    """
    given = description.get("colors", {})
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: 'colors' must map class names to '#rrggbb'")
    unknown = sorted(set(given) - set(spec.class_names))
    bad = sorted(k for k, v in given.items() if not (isinstance(v, str) and _HEX_RE.match(v)))
    if unknown or bad:
        raise ConfigError(f"{source}: 'colors' has unknown classes {unknown} or malformed "
                          f"colours for {bad} (expected '#rrggbb')")
    return [given.get(name, DEFAULT_COLORS[k % len(DEFAULT_COLORS)])
            for k, name in enumerate(spec.class_names)]
