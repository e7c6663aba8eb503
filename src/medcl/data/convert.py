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
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from medcl.data.datasets import SPLITS_FILE, Case, Dataset, discover
from medcl.data.geometry import GeometryNotes
from medcl.data.io import Volume, save_nifti
from medcl.data.labels import IGNORE_NAME, LabelSpec
from medcl.data.slices import read_case
from medcl.errors import DataError
from medcl.files import atomic_write_text

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
CHANNEL_DIGITS = 4
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


def _write_case(case: Case, split: str, out: Path, spec: LabelSpec, *, geometry: str,
                notes: GeometryNotes) -> None:
    image, labels = read_case(case, spec, geometry=geometry, notes=notes)
    images_dir, labels_dir = _FOLDERS[split]
    for c in range(spec.in_channels):
        channel = Volume(image.data[..., c], image.affine, image.header, image.path)
        save_nifti(out / images_dir / f"{case.case_id}_{c:0{CHANNEL_DIGITS}d}{FILE_ENDING}",
                   channel.data, channel, dtype=np.float32)
    if labels is not None:
        save_nifti(out / labels_dir / f"{case.case_id}{FILE_ENDING}", labels, image,
                   dtype=_label_dtype(spec.num_classes))


def convert_to_nnunet(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                      labels_file: str | os.PathLike | None = None, geometry: str = "auto",
                      overwrite: bool = False, name: str | None = None) -> Dataset:
    """Write the dataset at ``source`` to ``out_dir`` in the nnU-Net v2 layout.

    Args:
        source: dataset folder in any layout :func:`~medcl.data.datasets.discover` reads.
        out_dir: output folder; it must be empty unless ``overwrite``.
        labels_file: dataset description (default ``source/dataset.json``).
        geometry: geometry policy for channels and labels (:mod:`medcl.data.geometry`).
        name: ``dataset.json`` name (default: the source folder's name).

    Returns:
        the source dataset as discovered.

    Raises:
        DataError: ``out_dir`` is not empty, or the source is inconsistent.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: output folder is not empty (pass --overwrite to write into it)")
    dataset = discover(source, labels_file)
    spec, notes = dataset.spec, GeometryNotes()
    for split, cases in dataset.splits.items():
        for case in cases:
            _write_case(case, split, out, spec, geometry=geometry, notes=notes)
        log.info("%s: %d cases written", split, len(cases))
    notes.warn(str(source))
    train = [c.case_id for c in dataset.cases("train")]
    val = [c.case_id for c in dataset.cases("val")]
    meta = nnunet_dataset_json(spec, len(train) + len(val), name or Path(source).name)
    atomic_write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    atomic_write_text(out / SPLITS_FILE, json.dumps([{"train": train, "val": val}], indent=2) + "\n")
    log.info("wrote the nnU-Net layout of %s to %s", source, out)
    return dataset
