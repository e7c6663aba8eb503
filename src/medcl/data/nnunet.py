"""The nnU-Net v2 raw layout: its naming conventions, and its ``dataset.json`` and
``splits_final.json`` checked against the files present.

medcl reads the layout (:mod:`medcl.data.datasets`) and writes it (:mod:`medcl.data.convert`).
What the dataset declares must agree with its files:

* ``file_ending``: an ending medcl cannot read (``.png``, ``.mha``) is an error; a NIfTI file
  with the other NIfTI ending is a warning naming it (medcl reads it, nnU-Net would not).
* ``channel_names``: as many channels as the image files have (``{case}_0000``,
  ``{case}_0001``, ...); otherwise an error naming ``dataset.json`` and both counts.
* ``numTraining``: the number of cases in ``imagesTr``; otherwise an error naming both counts
  (a case left in ``imagesTr`` by another conversion would be trained on).
* ``splits_final.json`` (its first fold): a listed case that is not in ``imagesTr``, or one
  listed in both ``train`` and ``val``, is an error; a case of ``imagesTr`` listed in neither is
  left out of training with a warning naming it (as nnU-Net trains that fold).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from medcl.data.io import NIFTI_SUFFIXES, case_stem, is_nifti, visible_entries
from medcl.errors import DataError

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
CHANNEL_DIGITS = 4
#: ``{case}_{XXXX}``: channel ``XXXX`` of a case.
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: nnU-Net's split file: ``[{"train": [...], "val": [...]}, ...]``, one entry per fold.
SPLITS_FILE = "splits_final.json"
TRAINING_IMAGES = "imagesTr"
IMAGE_DIRS = (TRAINING_IMAGES, "imagesVal", "imagesTs")
LABEL_DIRS = ("labelsTr", "labelsVal", "labelsTs")


def _nifti_files(folder: Path) -> list[Path]:
    return [p for p in visible_entries(folder) if p.is_file() and is_nifti(p)]


def _channels(count: int) -> str:
    return f"{count} channel{'' if count == 1 else 's'}"


def file_channels(files: list[Path]) -> int:
    """The channels image files hold: with ``{case}_0000``, ``{case}_0001``, ... the highest
    index + 1 (over cases that have a ``_0000`` file); files named by their case alone hold 1."""
    stems = {case_stem(p) for p in files}
    found = 1
    for stem in stems:
        match = CHANNEL_RE.match(stem)
        if match and f"{match['case']}_{0:0{CHANNEL_DIGITS}d}" in stems:
            found = max(found, int(match["channel"]) + 1)
    return found


def check_files(root: Path, description: dict, source: str,
                channel_names: tuple[str, ...]) -> None:
    """Check ``file_ending`` and ``channel_names`` of ``source`` against the folders of ``root``.

    Raises:
        DataError: an ending medcl cannot read, or a channel count the image files do not have.
    """
    ending = description.get("file_ending")
    if ending is not None and ending not in NIFTI_SUFFIXES:
        raise DataError(f"{source}: file_ending {ending!r}: medcl reads NIfTI files only "
                        f"({', '.join(NIFTI_SUFFIXES)})")
    for name in IMAGE_DIRS + LABEL_DIRS:
        folder = root / name
        files = _nifti_files(folder) if folder.is_dir() else []
        other = [p.name for p in files if ending is not None and not p.name.endswith(ending)]
        if other:
            log.warning("%s: %d files do not end in the file_ending %r of %s (medcl reads them, "
                        "nnU-Net would not), e.g. %s", folder, len(other), ending, source, other[0])
        if name in IMAGE_DIRS and files and (found := file_channels(files)) != len(channel_names):
            raise DataError(f"{source}: channel_names declares {_channels(len(channel_names))} "
                            f"{list(channel_names)} but the images in {folder} have "
                            f"{_channels(found)} (e.g. {files[0].name})")


def check_num_training(description: dict, source: str, root: Path, num_cases: int) -> None:
    """``numTraining`` (if declared) must be the number of cases in ``imagesTr``.

    Raises:
        DataError: naming ``source``, both counts and the folder.
    """
    declared = description.get("numTraining")
    if declared is None:
        return
    if isinstance(declared, bool) or not isinstance(declared, int):
        raise DataError(f"{source}: numTraining must be an integer, got {declared!r}")
    if declared != num_cases:
        raise DataError(f"{source}: numTraining is {declared} but {root / TRAINING_IMAGES} holds "
                        f"{num_cases} cases; correct numTraining or the cases")


def read_split(path: Path, case_ids: list[str]) -> tuple[set[str], set[str]]:
    """The first fold of nnU-Net's split file at ``path``, checked against ``case_ids``, the
    cases of ``imagesTr``.

    Returns:
        ``(train, val)`` case ids; cases listed in neither are left out, with a warning.

    Raises:
        DataError: not a split file, a listed case not in ``case_ids``, or a case in both lists.
    """
    try:
        fold = json.loads(path.read_text())[0]
        train, val = set(fold["train"]), set(fold["val"])
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{path}: not a split file [{{'train': [...], 'val': [...]}}] "
                        f"({type(exc).__name__}: {exc})") from None
    unknown = sorted((train | val) - set(case_ids))
    if unknown:
        raise DataError(f"{path}: cases {unknown} are not in {TRAINING_IMAGES}")
    both = sorted(train & val)
    if both:
        raise DataError(f"{path}: cases {both} are in both train and val of the first fold")
    unlisted = sorted(set(case_ids) - train - val)
    if unlisted:
        log.warning("%s: cases %s of %s are in neither train nor val of the first fold; left "
                    "out of training", path, unlisted, TRAINING_IMAGES)
    return train, val
