"""The geometry policy: which voxel-to-world geometry a NIfTI file has, and when a label,
scribble or channel file may be put on its image's voxel grid.

**One file's header.** A NIfTI-1 header stores the geometry three times: ``pixdim`` (voxel
sizes), the ``qform`` (quaternion + offset, scaled by ``pixdim``) and the ``sform`` (a free
4x4 matrix), each with a code (0 = not set). Readers disagree when these fields do:

* nibabel's ``img.affine`` is the sform if its code is set, else the qform, else a default
  built from ``pixdim``; ``header.get_zooms()`` is always ``pixdim``.
* ITK (SimpleITK, ITK-SNAP, 3D Slicer) always takes the spacing from ``pixdim`` and the
  rotation and origin from the sform when it is set and rigid, else from the qform.

medcl reads a file as follows (:func:`header_geometry`): the **sform** when its code is set and
its voxel sizes equal ``pixdim`` (there every reader agrees), else the **qform** (whose voxel
sizes are ``pixdim`` by construction), else, with both codes 0, the file has **no geometry**.
A sform whose voxel sizes differ from ``pixdim`` (a unit-scaled sform beside a 1.5625 mm
``pixdim``, as in the ACDC scribble release), or a sform and qform that disagree, is reported as
the file's own inconsistency. A unit-spaced, axis-aligned header at the origin (what a tool
writes when it saves an array without geometry) also counts as no geometry.

**A file beside its image** (:func:`check_geometry`), with the modes of ``--geometry``:

First, in every mode, a file stored in another **axis order or direction** whose voxel centres
are exactly the image's (the same grid after permuting and flipping axes: one of the 48
axis-aligned orientations of the same voxels) is **reoriented exactly** onto the image's grid
(:func:`grid_permutation`; no interpolation) and counts as agreeing. Otherwise:

* ``auto`` (default): shapes must be equal. A file with no geometry, a file written without one
  (a tool's default header: axis-aligned at 0 in the direction nibabel or ITK writes for a bare
  array, with the image's spacing), or a file whose geometry differs from the image's only where
  one of the two headers disagrees with itself (some reading of one header equals some reading
  of the other), is put on the image's grid voxel for voxel and listed in one warning per dataset
  (:class:`GeometryNotes`); so does an image (or a ground truth) written without geometry beside
  a file placed by a scanner (MSCMR's subject43 test label beside its prediction). Any other
  difference (spacing, orientation or origin) is an error that says what differs.
* ``image``: every file with the image's shape is put on the image's grid voxel for voxel (with
  the warning), except one whose header carries an orientation of its own (not a tool's
  default) with other axis codes than the image's valid header, or than an image header written
  without geometry when the file lies at the same origin (flipped or permuted about it): that
  would mirror or transpose it, so it is refused in every mode.
* ``strict``: any difference is an error (an exact reorientation is not a difference).

Outputs are written with ``qform = sform = `` the geometry used (:func:`resolve_volume` gives the
image that geometry; :func:`medcl.data.io.save_nifti` writes both forms), so ITK-based viewers
and nibabel read the same thing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from medcl.data.dicom import load_volume
from medcl.data.io import Volume
from medcl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

GEOMETRY_MODES = ("auto", "image", "strict")
SPACING_RTOL = 1e-3          # relative tolerance on voxel sizes
ORIGIN_ATOL_MM = 1e-2        # tolerance on the origin, mm
DIRECTION_ATOL = 1e-3        # tolerance on direction cosines
MAX_LISTED_FILES = 5         # files named in one warning; the rest are counted
DEFAULT_SPACING_MM = 1.0     # what a header without geometry carries
#: directions a tool writes for an array without geometry: nibabel's identity, ITK's LPS identity
DEFAULT_DIRECTIONS = ((1.0, 1.0, 1.0), (-1.0, -1.0, 1.0))


@dataclass(frozen=True)
class HeaderGeometry:
    """The geometry medcl reads from one header.

    Attributes:
        affine: ``(4, 4)`` voxel-to-world matrix that medcl uses.
        source: ``"sform"``, ``"qform"`` or ``"none"``.
        lost: the header carries no geometry (codes 0, or a default unit header).
        inconsistency: what the header's own fields disagree on, or ``None``.
        readings: every affine a reader may take from this header (medcl's first).
    """

    affine: np.ndarray
    source: str
    lost: bool
    inconsistency: str | None
    readings: tuple[np.ndarray, ...]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def bare(self) -> bool:
        """A tool's default header (axis-aligned at the origin in the direction nibabel or ITK
        writes for an array without geometry): orientation and origin were not written."""
        return _is_default(self.affine)

    @property
    def at_origin(self) -> bool:
        """The first voxel's centre lies at the world origin."""
        return bool(np.allclose(self.affine[:3, 3], 0.0, atol=ORIGIN_ATOL_MM))

    @property
    def oriented(self) -> bool:
        """The header carries an orientation of its own (neither lost nor a tool's default)."""
        return not (self.lost or self.bare)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two affines give the same spacing, directions and origin (within tolerance)."""
    sa, sb = _spacing(a), _spacing(b)
    if not np.allclose(sa, sb, rtol=SPACING_RTOL):
        return False
    if not np.allclose(a[:3, :3] / sa, b[:3, :3] / sb, atol=DIRECTION_ATOL):
        return False
    return bool(np.allclose(a[:3, 3], b[:3, 3], atol=ORIGIN_ATOL_MM))


def _is_default(affine: np.ndarray) -> bool:
    """The directions a tool writes for an array saved without geometry (nibabel: identity;
    ITK: LPS identity, stored as ``diag(-1, -1, 1)``), at the origin."""
    direction = affine[:3, :3] / _spacing(affine)
    return (any(np.allclose(direction, np.diag(d), atol=DIRECTION_ATOL) for d in DEFAULT_DIRECTIONS)
            and np.allclose(affine[:3, 3], 0.0, atol=ORIGIN_ATOL_MM))


def grid_permutation(ref: np.ndarray, other: np.ndarray, ref_shape: Sequence[int],
                     other_shape: Sequence[int]) -> tuple[tuple[int, int, int],
                                                          tuple[bool, bool, bool]] | None:
    """How ``other``'s voxels lie on ``ref``'s grid, where they are the same voxels in another
    axis order or direction.

    Args:
        ref, other: ``(4, 4)`` voxel-to-world affines.
        ref_shape, other_shape: their grids' sizes ``(X, Y, Z)``.

    Returns:
        ``(axes, flips)``: ref's axis ``a`` is other's axis ``axes[a]``, reversed where
        ``flips[a]``; ``None`` when the voxel centres differ (another spacing, a rotation that is
        not a multiple of 90 degrees, a shift, or a grid that covers other voxels).
    """
    mapping = np.linalg.solve(other, ref)  # ref voxel index -> other voxel index
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    signed = np.rint(linear)
    if not (np.allclose(linear, signed, atol=DIRECTION_ATOL + SPACING_RTOL)
            and np.array_equal(np.abs(signed).sum(axis=0), np.ones(3))
            and np.array_equal(np.abs(signed).sum(axis=1), np.ones(3))):
        return None
    voxel_atol = ORIGIN_ATOL_MM / float(_spacing(other).min())
    if not np.allclose(offset, np.rint(offset), atol=voxel_atol):
        return None
    axes = tuple(int(np.flatnonzero(signed[:, a])[0]) for a in range(3))
    flips = tuple(bool(signed[axes[a], a] < 0) for a in range(3))
    for a, (b, flip) in enumerate(zip(axes, flips)):
        size = int(ref_shape[a])
        if size != int(other_shape[b]) or int(np.rint(offset[b])) != (size - 1 if flip else 0):
            return None
    return axes, flips


def reorient(data: np.ndarray, axes: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """``data`` ``(X, Y, Z, ...)`` in the axis order and direction :func:`grid_permutation`
    found: ``out[i, j, k]`` is the voxel of ``data`` at the same place."""
    out = np.transpose(data, (*axes, *range(3, data.ndim)))
    return np.ascontiguousarray(np.flip(out, [a for a in range(3) if flips[a]]))


def header_geometry(header: nib.Nifti1Header) -> HeaderGeometry:
    """Read a header's geometry by the rule in the module docstring."""
    pixdim = np.abs(np.asarray(header.get_zooms()[:3], dtype=np.float64))
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    sform = header.get_sform() if sform_code > 0 else None
    qform = header.get_qform() if qform_code > 0 else None
    readings = [a for a in (sform, qform) if a is not None]
    if not readings:
        base = header.get_base_affine()
        return HeaderGeometry(base, "none", True, None, (base,))
    notes = []
    sform_ok = sform is not None and np.allclose(_spacing(sform), pixdim, rtol=SPACING_RTOL)
    if sform is not None and not sform_ok:
        notes.append(f"sform spacing {_fmt(_spacing(sform))} mm vs pixdim {_fmt(pixdim)} mm")
    if sform is not None and qform is not None and sform_ok and not same_affine(sform, qform):
        notes.append(f"sform and qform differ ({describe_difference(qform, sform)})")
    if sform_ok:
        affine, source = sform, "sform"
    elif qform is not None:
        affine, source = qform, "qform"
    else:  # a sform that disagrees with pixdim and no qform: ITK's reading, pixdim + sform axes
        affine = sform.copy()
        affine[:3, :3] = sform[:3, :3] / _spacing(sform) * pixdim
        source = "sform"
    lost = bool(np.allclose(pixdim, DEFAULT_SPACING_MM, rtol=SPACING_RTOL)) and _is_default(affine)
    inconsistency = None
    if notes:
        inconsistency = (f"{'; '.join(notes)}: medcl and ITK-based viewers use pixdim spacing, "
                         f"medcl with the {source}; nibabel reads the sform")
    return HeaderGeometry(np.asarray(affine, dtype=np.float64), source, lost, inconsistency,
                          (np.asarray(affine, dtype=np.float64), *readings))


def describe_difference(ref: np.ndarray, other: np.ndarray) -> str:
    """What differs between two affines: spacing, orientation codes, origin offset in mm."""
    parts = []
    sr, so = _spacing(ref), _spacing(other)
    if not np.allclose(sr, so, rtol=SPACING_RTOL):
        parts.append(f"spacing {_fmt(so)} vs {_fmt(sr)} mm")
    cr, co = nib.aff2axcodes(ref), nib.aff2axcodes(other)
    if cr != co:
        parts.append(f"orientation {''.join(co)} vs {''.join(cr)}")
    elif not np.allclose(ref[:3, :3] / sr, other[:3, :3] / so, atol=DIRECTION_ATOL):
        cosines = np.clip(np.sum(ref[:3, :3] / sr * other[:3, :3] / so, axis=0), -1.0, 1.0)
        parts.append(f"axes rotated by up to {np.degrees(np.arccos(cosines.min())):.2f} deg")
    offset = float(np.linalg.norm(ref[:3, 3] - other[:3, 3]))
    if offset > ORIGIN_ATOL_MM:
        parts.append(f"origin offset {offset:.2f} mm")
    return ", ".join(parts) or "nothing"


@dataclass
class GeometryNotes:
    """Files put on their image's grid and headers that disagree with themselves.

    Collected over a dataset and logged as one warning by :meth:`warn`.
    """

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | os.PathLike | None, reason: str) -> None:
        item = (str(path), reason)
        if item not in self.items:
            self.items.append(item)

    def warn(self, what: str = "dataset") -> None:
        if not self.items:
            return
        listed = "; ".join(f"{p}: {r}" for p, r in self.items[:MAX_LISTED_FILES])
        more = len(self.items) - MAX_LISTED_FILES
        log.warning("%s: %d header problem(s); files that differ from their image are put on "
                    "its voxel grid: %s%s", what, len(self.items), listed,
                    f" (and {more} more)" if more > 0 else "")
        self.items.clear()


def check_mode(mode: str) -> str:
    if mode not in GEOMETRY_MODES:
        raise ConfigError(f"geometry={mode!r} is not valid; "
                          f"choose from {', '.join(GEOMETRY_MODES)}")
    return mode


def align(ref: Volume, other: Volume, *, mode: str = "auto",
          notes: GeometryNotes | None = None) -> tuple[Volume, bool]:
    """Put ``other`` (label, scribble, prediction or channel) on ``ref``'s (the image's) grid.

    Returns:
        ``(volume, agrees)``: ``other``'s data on ``ref``'s voxel grid (reoriented exactly when
        it is stored in another axis order or direction), with ``ref``'s affine and header where
        it was moved; ``agrees`` is ``False`` when it was taken voxel for voxel although its
        geometry differs (recorded in ``notes``).

    Raises:
        DataError: naming ``other.path``: a shape mismatch, another orientation than a valid
            image header's, or (mode ``auto``) a genuine conflict, or (mode ``strict``) any
            difference.
    """
    check_mode(mode)
    rg, og = header_geometry(ref.header), header_geometry(other.header)
    for geom, vol in ((rg, ref), (og, other)):
        if geom.inconsistency and notes is not None:
            notes.add(vol.path, f"header inconsistent ({geom.inconsistency})")
    if ref.shape == other.shape and same_affine(rg.affine, og.affine):
        return other, True
    placement = None if (rg.lost or og.lost) else grid_permutation(
        rg.affine, og.affine, ref.shape, other.shape)
    if placement is not None:
        log.info("%s: stored as %s, reoriented exactly onto %s's grid (%s)", other.path,
                 "".join(nib.aff2axcodes(og.affine)), ref.path, "".join(nib.aff2axcodes(rg.affine)))
        return replace(other, data=reorient(other.data, *placement), affine=ref.affine,
                       header=ref.header), True
    if ref.shape != other.shape:
        raise DataError(f"{other.path}: shape {other.shape} differs from {ref.path} {ref.shape}")
    difference = describe_difference(rg.affine, og.affine)
    other_orientation = nib.aff2axcodes(og.affine) != nib.aff2axcodes(rg.affine)
    # two orientations of their own that disagree, or an image written without geometry beside
    # a file flipped or permuted about the same origin: voxel for voxel would mirror or transpose
    if other_orientation and og.oriented and (rg.oriented or (rg.bare and og.at_origin)):
        raise DataError(f"{other.path}: stored in orientation {''.join(nib.aff2axcodes(og.affine))}"
                        f", {ref.path} in {''.join(nib.aff2axcodes(rg.affine))}, and the two grids "
                        f"are not the same voxels ({difference}); using it voxel for voxel would "
                        f"mirror or transpose it: resample it onto its image first")
    reason = None
    same_spacing = np.allclose(rg.spacing, og.spacing, rtol=SPACING_RTOL)
    if og.lost or rg.lost:
        owner = "its" if og.lost else "the image's"
        reason = f"no geometry in {owner} header (qform/sform codes 0, or a default unit header)"
    elif same_spacing and (og.bare or rg.bare):
        owner = "its" if og.bare else "the image's"
        reason = (f"{owner} header was written without geometry "
                  "(a tool's default at 0, same spacing)")
    elif (rg.inconsistency or og.inconsistency) and any(
            same_affine(a, b) for a in rg.readings for b in og.readings):
        reason = "differs only where a header disagrees with itself"
    if mode == "strict" or (reason is None and mode == "auto"):
        hint = "" if mode == "strict" else "; pass --geometry image to use the image's geometry"
        raise DataError(f"{other.path}: affine differs from {ref.path} ({difference}){hint}")
    if notes is not None:
        notes.add(other.path, f"affine differs from the image ({difference}): "
                              f"{reason or 'accepted by --geometry image'}")
    return other, False


def check_geometry(ref: Volume, other: Volume, *, mode: str = "auto",
                   notes: GeometryNotes | None = None) -> bool:
    """Whether ``other`` agrees with ``ref``'s grid; :func:`align` without the aligned data
    (for checks that need no voxels)."""
    return align(ref, other, mode=mode, notes=notes)[1]


def resolve_volume(volume: Volume) -> Volume:
    """``volume`` with the affine medcl reads from its header (see :func:`header_geometry`)."""
    return replace(volume, affine=header_geometry(volume.header).affine)


def read_image(paths: Sequence[str | os.PathLike], *, mode: str = "auto",
               notes: GeometryNotes | None = None) -> Volume:
    """Read one image of one or more channel files (NIfTI, or DICOM series folders) into
    ``(X, Y, Z, C)`` float32.

    Every channel is put on the first's grid with :func:`align`; the result carries
    the first channel's geometry as medcl reads it.
    """
    if not paths:
        raise ValueError("read_image needs at least one file")
    vols = [load_volume(p, kind="image") for p in paths]
    first = resolve_volume(vols[0])
    channels = [first] + [align(first, vol, mode=mode, notes=notes)[0] for vol in vols[1:]]
    data = np.stack([v.data for v in channels], axis=-1)
    return Volume(data=data, affine=first.affine, header=first.header, path=Path(paths[0]))
