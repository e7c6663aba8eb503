"""Scribble files: a folder of dense label maps -> a folder of simulated scribble maps.

Each output keeps its input's file name, voxel grid, affine and header; stroke voxels carry the
on-disk class values of the label definition, every other voxel its ignore value.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from medcl.data.io import case_stem, is_nifti, load_nifti, save_nifti
from medcl.data.labels import LabelSpec
from medcl.data.scribble import ScribbleOptions, scribble_volume
from medcl.errors import ConfigError, DataError
from medcl.ownership import OutputFolder

log = logging.getLogger(__name__)


def class_indices(spec: LabelSpec, names: Sequence[str]) -> tuple[int, ...]:
    """Class indices of foreground class names.

    Raises:
        ConfigError: a name is not a foreground class of ``spec`` (the message lists them).
    """
    unknown = [n for n in names if n not in spec.foreground_names]
    if unknown:
        raise ConfigError(f"unknown classes {unknown}; the foreground classes are "
                          f"{list(spec.foreground_names)}")
    return tuple(spec.class_names.index(n) for n in names)


def named_options(spec: LabelSpec, *, classes: Sequence[str] | None = None,
                  as_background: Sequence[str] = (), **overrides) -> ScribbleOptions:
    """:class:`ScribbleOptions` with classes given by name and other fields overridden."""
    options = ScribbleOptions(**overrides)
    return replace(options, classes=None if classes is None else class_indices(spec, classes),
                   as_background=class_indices(spec, as_background))


def case_seed(seed: int, case: str) -> int:
    """A per-case seed: the same case gets the same scribbles whatever else is in the folder."""
    return int(np.random.SeedSequence([seed, zlib.crc32(case.encode())]).generate_state(1)[0])


def _disk_dtype(spec: LabelSpec) -> type:
    values = list(spec.label_values) + [spec.ignore_value]
    fits = min(values) >= np.iinfo(np.int16).min and max(values) <= np.iinfo(np.int16).max
    return np.int16 if fits else np.int32


def scribble_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                    spec: LabelSpec, *, options: ScribbleOptions | None = None, seed: int = 0,
                    overwrite: bool = False,
                    progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write one simulated scribble file per dense label file of ``input_dir``.

    Args:
        input_dir: folder of NIfTI dense label maps (on-disk values of ``spec``).
        output_dir: folder for the scribble maps (same file names); created if needed.
        spec: label definition; its ``ignore_value`` marks unlabelled voxels.
        options: how strokes are drawn (default :class:`ScribbleOptions`).
        seed: the output is a function of the inputs and the seed.
        overwrite: replace existing output files that medcl wrote (otherwise an existing one
            is an error and nothing is written); a file medcl did not write is never replaced
            (:mod:`medcl.ownership`).
        progress: called with each case name once its file is written.

    Returns:
        The written files.

    Raises:
        ConfigError: ``spec`` has no ignore value, or the output folder is the input folder.
        DataError: the input folder is missing or empty, an output exists without
            ``overwrite`` or was not written by medcl, or a label file is unreadable or holds
            undeclared values.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if spec.ignore_value is None:
        raise ConfigError("the label definition needs an 'ignore' value for unlabelled voxels")
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: folder not found")
    if output_dir.resolve() == input_dir.resolve():
        raise ConfigError(f"{output_dir}: the output folder must differ from the input folder")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and is_nifti(p))
    if not files:
        raise DataError(f"{input_dir}: no NIfTI label files (.nii or .nii.gz)")
    outputs = OutputFolder(output_dir, "scribble")
    outputs.check([output_dir / p.name for p in files], overwrite=overwrite,
                  hint="use --overwrite to replace them")
    written = []
    for path in files:
        volume = load_nifti(path, kind="label")
        indices = spec.to_indices(volume.data, source=path)
        strokes = scribble_volume(indices, volume.spacing, num_classes=spec.num_classes,
                                  ignore_index=spec.ignore_index, options=options,
                                  seed=case_seed(seed, case_stem(path)))
        values = np.where(strokes == spec.ignore_index, spec.ignore_value, spec.to_values(strokes))
        save_nifti(output_dir / path.name, values, volume, dtype=_disk_dtype(spec))
        outputs.record([output_dir / path.name])
        written.append(output_dir / path.name)
        log.debug("%s: %d stroke voxels", path.name, int((strokes != spec.ignore_index).sum()))
        if progress is not None:
            progress(case_stem(path))
    return written
