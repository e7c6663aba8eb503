"""A generated multi-organ abdominal CT phantom (BTCV's 13 organs) for tests and measurements.

Each organ is an ellipsoid (the vessels and the oesophagus are tubes along z) placed in a body
ellipse at a position and size relative to the field of view, with Hounsfield units near real
ones: air -1000, subcutaneous fat -100, soft tissue 40, liver 60, spleen 50, kidneys 150 (cortical
enhancement), contrast-enhanced aorta 200 and veins 160, bone 700, gallbladder 10, and noise.
Organ sizes differ as in real scans: the liver fills a large part of the abdomen, each adrenal
gland is a few hundred voxels. Volumes are made slice by slice, so a 512 x 512 x 150 volume
needs little more memory than its own arrays.

:func:`generate_ct_dataset` writes the official BTCV layout: ``img/img{0001..}.nii.gz`` (int16
HU) and ``label/label{0001..}.nii.gz`` (uint8, 0 background, 1..13 the organs below).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medcl.errors import ConfigError
from medcl.files import atomic_path

#: BTCV's label values 1..13, in order
BTCV_ORGANS = ("spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver",
               "stomach", "aorta", "inferior_vena_cava", "portal_splenic_vein", "pancreas",
               "right_adrenal_gland", "left_adrenal_gland")
AIR_HU, FAT_HU, SOFT_TISSUE_HU, BONE_HU = -1000.0, -100.0, 40.0, 700.0
NOISE_HU = 12.0
BODY_SEMI_AXES = (0.44, 0.34)     # body ellipse / field of view (x, y)
FAT_LAYER = 0.06                  # subcutaneous fat thickness / field of view
SPINE = (0.5, 0.7, 0.05)          # centre x, centre y, radius / field of view
DEFAULT_SHAPE = (96, 96, 24)
DEFAULT_SPACING = (3.0, 3.0, 5.0)


@dataclass(frozen=True)
class Organ:
    """An ellipsoid: centre and semi-axes as fractions of the field of view (x, y, z)."""

    label: int
    hu: float
    centre: tuple[float, float, float]
    axes: tuple[float, float, float]


# x grows to the patient's left in this phantom's voxel grid (image right = patient left)
ORGANS = (
    Organ(6, 60.0, (0.33, 0.45, 0.45), (0.17, 0.14, 0.25)),    # liver (large)
    Organ(1, 50.0, (0.72, 0.50, 0.42), (0.07, 0.06, 0.14)),    # spleen
    Organ(2, 150.0, (0.36, 0.66, 0.60), (0.04, 0.05, 0.12)),   # right kidney
    Organ(3, 150.0, (0.64, 0.66, 0.58), (0.04, 0.05, 0.12)),   # left kidney
    Organ(4, 10.0, (0.38, 0.40, 0.62), (0.03, 0.025, 0.07)),   # gallbladder
    Organ(5, 40.0, (0.52, 0.58, 0.15), (0.012, 0.012, 0.16)),  # oesophagus (tube)
    Organ(7, 20.0, (0.62, 0.38, 0.35), (0.08, 0.06, 0.12)),    # stomach
    Organ(8, 200.0, (0.52, 0.60, 0.50), (0.018, 0.018, 0.50)),  # aorta (tube)
    Organ(9, 160.0, (0.44, 0.58, 0.55), (0.02, 0.018, 0.45)),  # inferior vena cava (tube)
    Organ(10, 160.0, (0.50, 0.50, 0.50), (0.06, 0.012, 0.03)),  # portal / splenic vein
    Organ(11, 45.0, (0.55, 0.53, 0.56), (0.08, 0.018, 0.04)),  # pancreas
    Organ(12, 35.0, (0.42, 0.62, 0.40), (0.012, 0.01, 0.03)),  # right adrenal (tiny)
    Organ(13, 35.0, (0.60, 0.62, 0.40), (0.012, 0.01, 0.03)),  # left adrenal (tiny)
)


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ax: float, ay: float
             ) -> np.ndarray:
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def make_ct_volume(rng: np.random.Generator, *, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                   jitter: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: ``(hu (X, Y, Z) int16, labels (X, Y, Z) uint8)``.

    ``jitter`` moves every organ's centre by up to this fraction of the field of view.
    """
    if len(shape) != 3 or min(shape) < 2:
        raise ConfigError(f"shape must be 3 sizes >= 2, got {shape}")
    nx, ny, nz = shape
    xx, yy = np.meshgrid((np.arange(nx) + 0.5) / nx, (np.arange(ny) + 0.5) / ny, indexing="ij")
    organs = [Organ(o.label, o.hu, tuple(c + rng.uniform(-jitter, jitter) for c in o.centre),
                    o.axes) for o in ORGANS]
    hu = np.empty(shape, dtype=np.int16)
    labels = np.zeros(shape, dtype=np.uint8)
    body = _ellipse(xx, yy, 0.5, 0.5, *BODY_SEMI_AXES)
    inner = _ellipse(xx, yy, 0.5, 0.5, BODY_SEMI_AXES[0] - FAT_LAYER,
                     BODY_SEMI_AXES[1] - FAT_LAYER)
    spine = _ellipse(xx, yy, SPINE[0], SPINE[1], SPINE[2], SPINE[2])
    for z in range(nz):
        zf = (z + 0.5) / nz
        slice_hu = np.where(body, FAT_HU, AIR_HU).astype(np.float32)
        slice_hu[inner] = SOFT_TISSUE_HU
        slice_hu[spine] = BONE_HU
        slice_labels = labels[..., z]
        for organ in organs:
            dz = (zf - organ.centre[2]) / organ.axes[2]
            if abs(dz) >= 1:
                continue
            scale = np.sqrt(1 - dz * dz)
            mask = _ellipse(xx, yy, organ.centre[0], organ.centre[1], organ.axes[0] * scale,
                            organ.axes[1] * scale) & inner
            slice_hu[mask] = organ.hu
            slice_labels[mask] = organ.label
        slice_hu[body] += rng.normal(0.0, NOISE_HU, size=int(body.sum())).astype(np.float32)
        hu[..., z] = np.rint(slice_hu).astype(np.int16)
    return hu, labels


def generate_ct_dataset(out_dir: str | os.PathLike, *, num_cases: int = 4,
                        shape: tuple[int, int, int] = DEFAULT_SHAPE,
                        spacing: tuple[float, float, float] = DEFAULT_SPACING,
                        seed: int = 0) -> Path:
    """Write ``num_cases`` phantoms in the BTCV layout under ``out_dir``; returns ``out_dir``.

    Refuses a folder that already holds files (nothing is overwritten).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: not empty; choose a new folder for the generated CT dataset")
    if num_cases < 1:
        raise ConfigError(f"num_cases must be >= 1, got {num_cases}")
    rng = np.random.default_rng(seed)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS-like, as CT exports
    for i in range(1, num_cases + 1):
        hu, labels = make_ct_volume(rng, shape=shape)
        for folder, stem, data in (("img", "img", hu), ("label", "label", labels)):
            img = nib.Nifti1Image(data, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            with atomic_path(out / folder / f"{stem}{i:04d}.nii.gz") as tmp:
                nib.save(img, str(tmp))
    return out
