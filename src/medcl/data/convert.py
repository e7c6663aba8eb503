"""Convert any layout medcl reads (MSCMR release, nnU-Net, a described layout such as MyoPS's
official one) to the nnU-Net v2 raw layout.

Output::

    OUT/imagesTr/{case}_{XXXX}.nii.gz   training and validation cases, one file per channel
    OUT/labelsTr/{case}.nii.gz          class indices 0..K-1, unlabelled pixels = K ("ignore")
    OUT/imagesTs/{case}_{XXXX}.nii.gz   test images (OUT/labelsTs/ when the test split has labels)
    OUT/dataset.json                    channel_names, labels (+ "ignore"), file_ending,
                                        numTraining, and medcl's groups
    OUT/splits_final.json               one fold: the source's train and val cases

Labels of every kind (scribble codes, merged classes, rounding) are decoded by the dataset
description and written as consecutive class indices, the convention of nnU-Net v2 (the ignore
label is the highest value). Every file is written with its image's geometry as medcl reads it
(:mod:`medcl.data.geometry`: ``qform = sform``, pixdim the spacing), so a label that lost its
geometry in the source lies on its image's grid in the output. ``medcl train`` on the output gives
the same slices as on the source.

The output folder is convert's own: it records what it writes (:mod:`medcl.ownership`), and
``overwrite`` replaces an earlier conversion there, removing its cases that this one does not
write again. A file convert did not write in a folder it writes (``imagesTr``, ``labelsTr``,
``imagesTs``, ``labelsTs`` when the test split has labels) or at ``dataset.json``/
``splits_final.json`` would be read as part of the dataset: the conversion is refused. Other
files in the folder are left alone, named in a warning. An output folder that is, holds or
lies inside the source is refused.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from medcl.data.datasets import Case, Dataset, discover
from medcl.data.geometry import GeometryNotes
from medcl.data.io import Volume, save_nifti
from medcl.data.labels import IGNORE_NAME, LabelSpec
from medcl.data.nnunet import CHANNEL_DIGITS, FILE_ENDING, SPLITS_FILE
from medcl.data.slices import read_case
from medcl.errors import DataError
from medcl.files import atomic_write_text
from medcl.ownership import OutputFolder, check_output_outside

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
_FOLDERS = {"train": ("imagesTr", "labelsTr"), "val": ("imagesTr", "labelsTr"),
            "test": ("imagesTs", "labelsTs")}


def nnunet_dataset_json(spec: LabelSpec, num_training: int, name: str) -> dict:
    """``dataset.json`` of the converted dataset: labels are class indices, ignore = K."""
    labels = {n: k for k, n in enumerate(spec.class_names)}
    labels[IGNORE_NAME] = spec.ignore_index
    out = {"name": name, "channel_names": {str(i): n for i, n in enumerate(spec.channel_names)},
           "labels": labels, "numTraining": num_training, "file_ending": FILE_ENDING}
    if spec.groups:
        out["groups"] = {g: list(m) for g, m in spec.groups.items()}
    if spec.windows:
        out["intensity"] = {n: {"window": list(w)} for n, w in spec.windows.items()}
    return out


def _label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes < np.iinfo(np.uint8).max else np.uint16


def _case_files(case: Case, split: str, out: Path, spec: LabelSpec) -> list[Path]:
    """The files a case is written to: one image per channel, then its label file (if any)."""
    images_dir, labels_dir = _FOLDERS[split]
    files = [out / images_dir / f"{case.case_id}_{c:0{CHANNEL_DIGITS}d}{FILE_ENDING}"
             for c in range(spec.in_channels)]
    if case.label_path is not None:
        files.append(out / labels_dir / f"{case.case_id}{FILE_ENDING}")
    return files


def _write_case(case: Case, files: list[Path], spec: LabelSpec, *, geometry: str,
                notes: GeometryNotes) -> None:
    image, labels = read_case(case, spec, geometry=geometry, notes=notes)
    for c in range(spec.in_channels):
        channel = Volume(image.data[..., c], image.affine, image.header, image.path)
        save_nifti(files[c], channel.data, channel, dtype=np.float32)
    if labels is not None:
        save_nifti(files[-1], labels, image, dtype=_label_dtype(spec.num_classes))


def convert_to_nnunet(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                      labels_file: str | os.PathLike | None = None, geometry: str = "auto",
                      overwrite: bool = False, name: str | None = None) -> Dataset:
    """Write the dataset at ``source`` to ``out_dir`` in the nnU-Net v2 layout.

    Args:
        source: dataset folder in any layout :func:`~medcl.data.datasets.discover` reads.
        out_dir: output folder, outside ``source``; it must be empty unless ``overwrite``.
        labels_file: dataset description (default ``source/dataset.json``).
        geometry: geometry policy for channels and labels (:mod:`medcl.data.geometry`).
        overwrite: replace an earlier conversion in ``out_dir`` (module docstring).
        name: ``dataset.json`` name (default: the source folder's name).

    Returns:
        the source dataset as discovered.

    Raises:
        DataError: ``out_dir`` overlaps ``source``, is not empty (without ``overwrite``) or holds
            files convert did not write where it writes; or the source is inconsistent.
    """
    out = Path(out_dir)
    check_output_outside(source, out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: output folder is not empty (pass --overwrite to replace an "
                        "earlier conversion there)")
    dataset = discover(source, labels_file)
    spec, notes, outputs = dataset.spec, GeometryNotes(), OutputFolder(out, "convert")
    files = {(split, c.case_id): _case_files(c, split, out, spec)
             for split, cases in dataset.splits.items() for c in cases}
    outputs.replace_layout([f for paths in files.values() for f in paths]
                           + [out / DATASET_JSON, out / SPLITS_FILE])
    for split, cases in dataset.splits.items():
        for case in cases:
            _write_case(case, files[split, case.case_id], spec, geometry=geometry, notes=notes)
            outputs.record(files[split, case.case_id])
        log.info("%s: %d cases written", split, len(cases))
    notes.warn(str(source))
    train = [c.case_id for c in dataset.cases("train")]
    val = [c.case_id for c in dataset.cases("val")]
    meta = nnunet_dataset_json(spec, len(train) + len(val), name or Path(source).name)
    atomic_write_text(out / DATASET_JSON, json.dumps(meta, indent=2) + "\n")
    atomic_write_text(out / SPLITS_FILE,
                      json.dumps([{"train": train, "val": val}], indent=2) + "\n")
    outputs.record([out / DATASET_JSON, out / SPLITS_FILE])
    log.info("wrote the nnU-Net layout of %s to %s", source, out)
    return dataset
