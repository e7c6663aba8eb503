"""Synthetic data: cardiac-like short-axis stacks, scribble simulation, and dataset writing.

:func:`simulate_scribbles` turns any dense label volume (class indices) into a sparse scribble
volume, one thin stroke per structure and slice, everything else ``ignore_index``.
:func:`make_volume` draws an LGE-like short-axis stack (bright LV and RV blood pools, dark
myocardium, textured body) and :func:`generate_dataset` writes a small dataset of them in the
MSCMR or nnU-Net layout, readable by :func:`medcl.data.datasets.discover`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medcl.data.io import Volume, save_nifti
from medcl.data.labels import LabelSpec
from medcl.data.nnunet import FILE_ENDING
from medcl.data.scribble import breadth_first_piece
from medcl.errors import ConfigError, DataError
from medcl.files import atomic_write_text
from medcl.ownership import OutputFolder

log = logging.getLogger(__name__)

LAYOUTS = ("mscmr", "nnunet")
DEFAULT_SHAPE = (96, 96, 8)
DEFAULT_SPACING = (1.6, 1.6, 8.0)
MIN_INPLANE_SIZE = 32
CARDIAC_SPEC = LabelSpec(class_names=("background", "RV", "Myo", "LV"), label_values=(0, 1, 2, 3),
                         ignore_value=4, channel_names=("LGE",))

# Scribble simulation (pixel units).
MEDIAL_FRACTION = (0.35, 0.75)     # stroke at this fraction of a region's max inner distance
STROKE_HALF_WIDTH = 0.75           # band |dist - target| <= this: strokes 1-2 px wide
SCRIBBLE_FRACTION = (0.03, 0.08)   # stroke pixels / structure pixels
MIN_STROKE_PIXELS = 3
MIN_COMPONENT_PIXELS = 20          # smaller extra components of a class get no stroke
BACKGROUND_RING_DISTANCE = (3.0, 8.0)
BACKGROUND_RING_FRACTION = (0.3, 0.6)  # share of the ring kept as the stroke
BACKGROUND_EXTRA_STROKES = 2
BACKGROUND_EXTRA_LENGTH = (6, 14)

# Phantom anatomy (mm) and appearance (relative intensities before gain).
LV_RADIUS_MM = (10.0, 18.0)
MYO_THICKNESS_MM = (6.0, 10.0)
RV_DEPTH_MM = (8.0, 18.0)
RV_SPAN = (1.2, 1.6)               # RV half-width across its direction / epicardial radius
RV_ANGLE_DEG = (150.0, 210.0)
RV_TWIST_RAD = 0.2                 # change of the RV angle from base to apex, at most
MIN_RV_DEPTH_PX = 1.5              # thinner RV crescents are dropped (apex)
APEX_SCALE = (0.35, 0.6)           # LV size at the apical slice / at the basal slice
RV_APEX_SCALE = (0.0, 0.5)
CENTRE_JITTER = 0.12               # heart centre offset from the image centre / field of view
CENTRE_DRIFT_MM = 4.0
BOUNDARY_WOBBLE = 0.06
BODY_AXES = (0.36, 0.46)           # body ellipse semi-axes / field of view
LV_BLOOD, RV_BLOOD_RATIO, MYO = (0.7, 0.95), (0.8, 1.1), (0.05, 0.2)
BODY, AIR, TEXTURE_AMPLITUDE, TEXTURE_SIGMA_PX = (0.3, 0.5), 0.02, 0.12, (3.0, 3.0, 0.5)
NUM_BLOBS, BLOB_RADIUS_MM, BLOB_INTENSITY = (3, 7), (4.0, 15.0), (0.1, 0.85)
BLOB_SPREAD = 0.3                  # blob centre offset from the image centre / field of view
SCAR_PROBABILITY, SCAR_INTENSITY, SCAR_HALF_ANGLE_RAD = 0.3, (0.55, 0.85), (0.4, 1.2)
BLUR_SIGMA_PX, BIAS_STRENGTH, NOISE_SIGMA = 0.6, 0.2, (0.03, 0.07)
GAIN, OFFSET = (150.0, 600.0), (0.0, 50.0)


def _stroke(mask: np.ndarray, band: np.ndarray, target: int,
            rng: np.random.Generator) -> np.ndarray:
    """The first ``target`` pixels of a breadth-first walk through ``band & mask`` (8-connected)
    from a random seed: a contiguous piece of the band."""
    return breadth_first_piece(band & mask, target, rng)


def _medial_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin stroke near the medial band of one connected region."""
    dist = ndimage.distance_transform_edt(mask)
    max_dist = float(dist.max())
    level = rng.uniform(*MEDIAL_FRACTION) * max_dist
    band = np.abs(dist - level) <= STROKE_HALF_WIDTH
    if max_dist <= 2 * STROKE_HALF_WIDTH + 1 or not band.any():
        band = dist >= max_dist - 0.5            # thin region: its ridge
    target = max(MIN_STROKE_PIXELS, int(rng.uniform(*SCRIBBLE_FRACTION) * mask.sum()))
    return _stroke(mask, band, target, rng)


def _background_strokes(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A partial ring around the foreground plus a few short straight strokes farther out."""
    fg = ~bg
    if not fg.any():
        return _medial_stroke(bg, rng)
    dist = ndimage.distance_transform_edt(bg)
    ring = np.abs(dist - rng.uniform(*BACKGROUND_RING_DISTANCE)) <= STROKE_HALF_WIDTH
    target = max(MIN_STROKE_PIXELS, int(rng.uniform(*BACKGROUND_RING_FRACTION) * ring.sum()))
    out = _stroke(bg, ring, target, rng)
    far = np.argwhere(bg & (dist > BACKGROUND_RING_DISTANCE[1] + 2 * STROKE_HALF_WIDTH))
    for _ in range(BACKGROUND_EXTRA_STROKES if len(far) else 0):
        start = far[rng.integers(len(far))]
        angle, length = rng.uniform(0, 2 * np.pi), rng.integers(*BACKGROUND_EXTRA_LENGTH)
        steps = np.arange(length)[:, None] * np.array([np.cos(angle), np.sin(angle)])
        pts = np.rint(start + steps).astype(int)
        pts = pts[((pts >= 0) & (pts < bg.shape)).all(axis=1)]
        out[pts[:, 0], pts[:, 1]] |= bg[pts[:, 0], pts[:, 1]]
    return out


def simulate_scribbles(labels: np.ndarray, *, num_classes: int, ignore_index: int,
                       rng: np.random.Generator, slice_axis: int = -1,
                       min_component_pixels: int = MIN_COMPONENT_PIXELS) -> np.ndarray:
    """Simulate scribble annotation of a dense label volume.

    In every slice along ``slice_axis``, each class present (background included) gets a thin
    (1-2 px) stroke well inside its structure: a contiguous piece of the level set of the
    distance to the boundary at a random fraction of the region's largest inner distance,
    covering a few percent of the region. The background gets a partial ring around the
    foreground and a few short strokes farther out. Works for any dataset's labels.

    Args:
        labels: dense class indices ``0..num_classes-1``; ``ignore_index`` pixels are allowed and
            stay unlabelled.
        num_classes: number of classes including the background (index 0).
        ignore_index: value written to unlabelled pixels.
        rng: random generator (the result is deterministic given its state).
        slice_axis: axis along which slices are annotated.
        min_component_pixels: extra connected components of a class smaller than this get no
            stroke (the largest one always gets one).

    Returns:
        Array of ``labels``' shape (int64) holding class indices on strokes, ``ignore_index``
        elsewhere.

    Raises:
        ConfigError: invalid ``num_classes``, ``ignore_index``, ``slice_axis`` or
            ``min_component_pixels``.
        DataError: ``labels`` is not 2D/3D or holds values outside ``0..num_classes-1`` and
            ``ignore_index``.
    """
    labels = np.asarray(labels)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if min_component_pixels < 0:
        raise ConfigError(f"min_component_pixels must be >= 0, got {min_component_pixels}")
    if 0 <= ignore_index < num_classes:
        raise ConfigError(f"ignore_index {ignore_index} collides with a class index")
    if labels.ndim not in (2, 3):
        raise DataError(f"expected a 2D or 3D label map, got shape {labels.shape}")
    if not -labels.ndim <= slice_axis < labels.ndim:
        raise ConfigError(f"slice_axis {slice_axis} is invalid for a {labels.ndim}D label map")
    bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(num_classes), ignore_index])
    if bad.size:
        raise DataError(f"label map holds values {bad.tolist()} outside 0..{num_classes - 1}")
    moved = np.moveaxis(labels, slice_axis, -1) if labels.ndim == 3 else labels[..., None]
    out = np.full(moved.shape, ignore_index, dtype=np.int64)
    for z in range(moved.shape[-1]):
        sl, sc = moved[..., z], out[..., z]
        for cls in np.unique(sl):
            if cls == ignore_index:
                continue
            if cls == 0:
                sc[_background_strokes(sl == 0, rng)] = 0
                continue
            comps, _ = ndimage.label(sl == cls)
            sizes, boxes = np.bincount(comps.ravel())[1:], ndimage.find_objects(comps)
            for rank, comp in enumerate(np.argsort(sizes)[::-1]):
                if rank and sizes[comp] < min_component_pixels:
                    break
                box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in boxes[comp])
                crop = np.pad(comps[box] == comp + 1, 1)      # cropped, with a background rim
                sc[box][_medial_stroke(crop, rng)[1:-1, 1:-1]] = cls
    return np.moveaxis(out, -1, slice_axis) if labels.ndim == 3 else out[..., 0]


def make_volume(rng: np.random.Generator, *, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                spacing: tuple[float, float, float] = DEFAULT_SPACING
                ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic LGE-like short-axis stack, base (``z=0``) to apex.

    The LV blood pool (a wobbly disk) is surrounded by the myocardium (a ring, dark, sometimes
    with a bright scar sector) and flanked by an RV crescent; centre, radii, wall thickness, RV
    size and angle vary per volume and slowly along ``z`` (apex smaller, RV vanishing). The body
    is a textured ellipse with random blobs (some as bright as blood); a per-volume gain/offset,
    a smooth multiplicative bias field, blur and Rician noise complete the image.

    Args:
        rng: random generator.
        shape: ``(X, Y, Z)`` voxels; ``X, Y >= 32``.
        spacing: voxel size in mm; anatomy sizes are in mm.

    Returns:
        ``(image, labels)``: float32 ``(X, Y, Z)`` and int64 class indices (0 background,
        1 RV, 2 Myo, 3 LV).
    """
    shape, spacing = _check_geometry(shape, spacing)
    nx, ny, nz = shape
    fov = np.array([nx * spacing[0], ny * spacing[1]])
    t = np.linspace(0.0, 1.0, nz) if nz > 1 else np.zeros(1)
    x = (np.arange(nx) - (nx - 1) / 2)[:, None, None] * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2)[None, :, None] * spacing[1]

    def u(low_high: tuple[float, float]) -> float:
        return rng.uniform(*low_high)

    centre = rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, 2) * fov
    drift = rng.uniform(-CENTRE_DRIFT_MM, CENTRE_DRIFT_MM, 2)
    cx, cy = centre[0] + drift[0] * t, centre[1] + drift[1] * t
    scale = 1.0 - (1.0 - u(APEX_SCALE)) * t
    r_endo = u(LV_RADIUS_MM) * scale
    r_epi = r_endo + u(MYO_THICKNESS_MM) * np.sqrt(scale)
    dx, dy = x - cx, y - cy
    dist, phi = np.hypot(dx, dy), np.arctan2(dy, dx)
    wobble = 1.0 + sum(rng.normal(0, BOUNDARY_WOBBLE) * np.cos(k * phi - rng.uniform(0, 2 * np.pi))
                       for k in (2, 3))
    endo, epi = dist < r_endo * wobble, dist < r_epi * wobble

    angle = np.deg2rad(u(RV_ANGLE_DEG)) + rng.uniform(-RV_TWIST_RAD, RV_TWIST_RAD) * t
    rv_scale = 1.0 - (1.0 - u(RV_APEX_SCALE)) * t
    depth, span = u(RV_DEPTH_MM) * rv_scale, u(RV_SPAN) * r_epi
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    offset, half = depth / 2 + 0.3 * r_epi, r_epi + depth / 2
    across = across / np.maximum(span * np.sqrt(rv_scale), 1e-3)
    rv = ((along - offset) / half) ** 2 + across ** 2 < 1
    rv &= ~epi & (depth > MIN_RV_DEPTH_PX * spacing[0])

    labels = np.zeros(shape, dtype=np.int64)
    labels[rv], labels[epi], labels[endo] = 1, 2, 3

    axes = rng.uniform(*BODY_AXES, 2) * fov
    body = (x / axes[0]) ** 2 + (y / axes[1]) ** 2 < 1
    texture = ndimage.gaussian_filter(rng.normal(size=shape), TEXTURE_SIGMA_PX)
    img = np.where(body, u(BODY) + TEXTURE_AMPLITUDE * texture / (texture.std() + 1e-6), AIR)
    for _ in range(rng.integers(*NUM_BLOBS)):
        bc = rng.uniform(-BLOB_SPREAD, BLOB_SPREAD, 2) * fov
        img = np.where(np.hypot(x - bc[0], y - bc[1]) < u(BLOB_RADIUS_MM), u(BLOB_INTENSITY), img)
    lv_blood = u(LV_BLOOD)
    img = np.where(labels == 1, lv_blood * u(RV_BLOOD_RATIO), img)
    img = np.where(labels == 2, u(MYO), img)
    img = np.where(labels == 3, lv_blood, img)
    if rng.random() < SCAR_PROBABILITY:
        sector = np.cos(phi - rng.uniform(0, 2 * np.pi)) > np.cos(u(SCAR_HALF_ANGLE_RAD))
        img = np.where((labels == 2) & sector & (dist < (r_endo + r_epi) / 2 * wobble),
                       u(SCAR_INTENSITY), img)

    img = ndimage.gaussian_filter(img, (BLUR_SIGMA_PX, BLUR_SIGMA_PX, 0))
    xn, yn = x / fov[0], y / fov[1]
    bias = sum(rng.normal(0, BIAS_STRENGTH) * term for term in (xn, yn, xn * yn, xn ** 2, yn ** 2))
    img = img * np.exp(bias + rng.normal(0, BIAS_STRENGTH / 4) * t)
    sigma = u(NOISE_SIGMA)
    img = np.hypot(img + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return (img * u(GAIN) + u(OFFSET)).astype(np.float32), labels


def _check_geometry(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if len(shape) != 3 or min(shape[:2]) < MIN_INPLANE_SIZE or shape[2] < 1:
        raise ConfigError(f"shape must be (X, Y, Z) with X, Y >= {MIN_INPLANE_SIZE}, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError(f"spacing must be 3 positive sizes in mm, got {spacing}")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)


def random_affine(rng: np.random.Generator, spacing: tuple[float, float, float], *,
                  max_offset_mm: float = 100.0) -> np.ndarray:
    """A voxel-to-world affine: ``spacing`` scaled, rotated about z at random, offset at random."""
    theta = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = rng.uniform(-max_offset_mm, max_offset_mm, 3)
    return affine


def generate_dataset(out_dir: str | os.PathLike, *, num_train: int = 8, num_val: int = 2,
                     num_test: int = 3, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                     spacing: tuple[float, float, float] = DEFAULT_SPACING, seed: int = 0,
                     layout: str = "mscmr", name: str = "SyntheticCardiac",
                     overwrite: bool = False) -> Path:
    """Write a synthetic cardiac dataset: scribbles for training, dense labels for val and test.

    Layouts (case ids ``case01``, ``case02``, ... over all splits):

    * ``"mscmr"``: ``train/images/caseNN_DE.nii.gz`` + ``train/labels/caseNN_DE_scribble.nii.gz``,
      ``val/`` and ``TestSet/`` with ``labels/caseNN_DE_manual.nii.gz``.
    * ``"nnunet"``: ``imagesTr/caseNN_0000.nii.gz`` + ``labelsTr/caseNN.nii.gz`` (scribbles),
      ``imagesVal``/``labelsVal`` and ``imagesTs``/``labelsTs`` (dense).

    Labels are stored as uint8 with values 0 background, 1 RV, 2 Myo, 3 LV and 4 unlabelled;
    images as float32. Every volume has its own rotated, offset affine. ``dataset.json`` holds
    the label definition. The output is deterministic given ``seed``.

    Args:
        out_dir: dataset folder to create.
        num_train, num_val, num_test: number of cases per split (``num_train >= 1``).
        shape: ``(X, Y, Z)`` voxels of every volume.
        spacing: voxel size in mm (the affine's column norms).
        seed: seed of every random choice.
        layout: ``"mscmr"`` or ``"nnunet"``.
        name: dataset name written to ``dataset.json``.
        overwrite: replace an earlier generated dataset in ``out_dir``: its files that this one
            does not write again are removed; files medcl did not write in its folders are
            refused, others left (:meth:`medcl.ownership.OutputFolder.replace_layout`).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: a bad count, geometry or layout, or a non-empty ``out_dir`` without
            ``overwrite``.
        DataError: files medcl did not write where the dataset goes.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if num_train < 1 or num_val < 0 or num_test < 0:
        raise ConfigError(f"need num_train >= 1 and num_val, num_test >= 0, "
                          f"got {num_train}, {num_val}, {num_test}")
    shape, spacing = _check_geometry(shape, spacing)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: output folder is not empty (pass overwrite=True)")
    spec = CARDIAC_SPEC
    value_lut = np.asarray(list(spec.label_values) + [spec.ignore_value], dtype=np.uint8)
    total = num_train + num_val + num_test
    width = max(2, len(str(total)))
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(total)]
    splits = ["train"] * num_train + ["val"] * num_val + ["test"] * num_test
    paths = [_case_paths(out, layout, split, f"case{i:0{width}d}")
             for i, split in enumerate(splits, start=1)]
    outputs = OutputFolder(out, "synthetic")
    outputs.replace_layout([p for pair in paths for p in pair] + [out / "dataset.json"])
    for split, rng, (img_path, lab_path) in zip(splits, rngs, paths):
        image, labels = make_volume(rng, shape=shape, spacing=spacing)
        if split == "train":
            labels = simulate_scribbles(labels, num_classes=spec.num_classes,
                                        ignore_index=spec.ignore_index, rng=rng)
        affine = random_affine(rng, spacing)
        ref = Volume(data=image, affine=affine, header=nib.Nifti1Image(image, affine).header)
        ref.header.set_xyzt_units("mm")
        save_nifti(img_path, image, ref, dtype=np.float32)
        save_nifti(lab_path, value_lut[labels], ref, dtype=np.uint8)
        outputs.record([img_path, lab_path])
    meta = {**spec.to_dict(), "name": name,
            "description": f"synthetic cardiac short-axis stacks, seed {seed}"}
    if layout == "nnunet":
        meta.update({"file_ending": FILE_ENDING, "numTraining": num_train})
    atomic_write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    outputs.record([out / "dataset.json"])
    log.info("wrote %d synthetic cases (%s layout) to %s", total, layout, out)
    return out


def _case_paths(out: Path, layout: str, split: str, case: str) -> tuple[Path, Path]:
    if layout == "nnunet":
        suffix = {"train": "Tr", "val": "Val", "test": "Ts"}[split]
        return (out / f"images{suffix}" / f"{case}_0000.nii.gz",
                out / f"labels{suffix}" / f"{case}.nii.gz")
    folder = out / {"train": "train", "val": "val", "test": "TestSet"}[split]
    kind = "scribble" if split == "train" else "manual"
    return folder / "images" / f"{case}_DE.nii.gz", folder / "labels" / f"{case}_DE_{kind}.nii.gz"
