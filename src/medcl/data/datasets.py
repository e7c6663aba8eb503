"""Dataset discovery: find the cases of each split and pair images with labels by case id.

Two layouts are understood, with no code change per dataset:

* the **MSCMR release layout**::

      ROOT/train/images/subject13_DE.nii.gz   ROOT/train/labels/subject13_DE_scribble.nii.gz
      ROOT/val/images/...                     ROOT/val/labels/subject1_DE_manual.nii.gz
      ROOT/TestSet/images/...                 ROOT/TestSet/labels/...

  A label file belongs to the image whose stem it starts with, followed by nothing or by a
  suffix that starts with ``_`` (``_scribble``, ``_manual``, ``_gt``, ...). The test split may
  be called ``TestSet`` or ``test``. Several channels per case are written ``{case}_0000``,
  ``{case}_0001``, ... as in nnU-Net.

* the **nnU-Net layout**: ``imagesTr/{case}_{XXXX}.nii.gz``, ``labelsTr/{case}.nii.gz``,
  ``imagesTs`` (and optionally ``labelsTs``, ``imagesVal``/``labelsVal``) and ``dataset.json``.

The label definition (:class:`~medcl.labels.LabelSpec`) comes from an explicit file, else from
``ROOT/dataset.json``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medcl.data.io import case_stem, is_nifti, visible_entries
from medcl.data.labels import LabelSpec
from medcl.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_MSCMR_DIRS = {"train": ("train",), "val": ("val", "validation"), "test": ("TestSet", "test")}
_NNUNET_DIRS = {"train": ("imagesTr", "labelsTr"), "val": ("imagesVal", "labelsVal"),
                "test": ("imagesTs", "labelsTs")}
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One case: its id, its channel files in channel order, and its label file (or ``None``)."""

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None = None


@dataclass
class Dataset:
    """The cases of each split of a dataset and its label definition."""

    root: Path
    layout: str
    spec: LabelSpec
    splits: dict[str, list[Case]] = field(default_factory=dict)

    def cases(self, split: str) -> list[Case]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return self.splits.get(split, [])


def nifti_files(folder: Path) -> list[Path]:
    """Sorted NIfTI files of ``folder``; :class:`DataError` if it is missing or has none.

    Hidden files (macOS ``._case.nii.gz``, medcl's own ``.name.XXXX.tmp.nii.gz`` temporaries)
    are not cases; a dangling symlink is skipped with a warning naming it.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = [p for p in visible_entries(folder) if p.is_file() and is_nifti(p)]
    if not files:
        raise DataError(f"{folder}: folder holds no .nii/.nii.gz files")
    return files


def group_channels(files: list[Path], in_channels: int) -> dict[str, tuple[Path, ...]]:
    """Group image files into cases.

    With one channel, a file's stem is its case id unless it ends in ``_0000`` (nnU-Net style),
    which is stripped. With several channels every file must be ``{case}_{XXXX}`` and every case
    needs channels ``0000 .. in_channels-1``.
    """
    groups: dict[str, dict[int, Path]] = {}
    if in_channels == 1:
        _refuse_channel_series(files)
    for path in files:
        stem = case_stem(path)
        match = _CHANNEL_RE.match(stem)
        if in_channels == 1 and not (match and int(match["channel"]) == 0):
            case, channel = stem, 0
        elif match:
            case, channel = match["case"], int(match["channel"])
        else:
            raise DataError(f"{path}: expected a name '{{case}}_XXXX' for a {in_channels}-channel image")
        if channel in groups.setdefault(case, {}):
            raise DataError(f"{path}: duplicate channel {channel} for case {case!r}")
        groups[case][channel] = path
    cases = {}
    for case, chans in sorted(groups.items()):
        missing = [c for c in range(in_channels) if c not in chans]
        extra = [c for c in chans if c >= in_channels]
        if missing or extra:
            first = next(iter(chans.values()))
            raise DataError(f"{first.parent}: case {case!r} has channels {sorted(chans)}, "
                            f"expected 0..{in_channels - 1}")
        cases[case] = tuple(chans[c] for c in range(in_channels))
    return cases


def _refuse_channel_series(files: list[Path]) -> None:
    """A 1-channel reader given ``{case}_0000``, ``{case}_0001``: a multi-channel folder."""
    stems = {case_stem(p) for p in files}
    for path in files:
        match = _CHANNEL_RE.match(case_stem(path))
        if match and int(match["channel"]) > 0 and f"{match['case']}_0000" in stems:
            raise DataError(f"{path}: looks like channel {int(match['channel'])} of case "
                            f"{match['case']!r}, but the model or dataset has 1 input channel")


def check_disjoint_splits(splits: dict[str, list[Case]], root: Path) -> None:
    """The same case id in two splits leaks evaluation data into training: an error."""
    seen: dict[str, str] = {}
    for split, cases in splits.items():
        for case in cases:
            if case.case_id in seen:
                raise DataError(f"{case.image_paths[0]}: case {case.case_id!r} is in both the "
                                f"{seen[case.case_id]} and the {split} split of {root}")
            seen[case.case_id] = split


def match_case(stem: str, case_ids: list[str]) -> str | None:
    """The longest case id that ``stem`` equals or extends with a ``_suffix``."""
    hits = [c for c in case_ids if stem == c or stem.startswith(c + "_")]
    return max(hits, key=len) if hits else None


def pair_by_case(cases: dict[str, tuple[Path, ...]], label_files: list[Path], *,
                 require_all: bool = True) -> list[Case]:
    """Pair image cases with label files by case id.

    Raises:
        DataError: a label file matches no image, two label files match one image, or (with
            ``require_all``) an image has no label file. The message names the file.
    """
    ids = sorted(cases)
    labels: dict[str, Path] = {}
    for path in label_files:
        case = match_case(case_stem(path), ids)
        if case is None:
            raise DataError(f"{path}: no image with a matching case id (case ids look like {ids[0]!r})")
        if case in labels:
            raise DataError(f"{path}: case {case!r} already has the label file {labels[case].name}")
        labels[case] = path
    if require_all:
        missing = [c for c in ids if c not in labels]
        if missing:
            raise DataError(f"{cases[missing[0]][0]}: no label file for case {missing[0]!r}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return [Case(c, cases[c], labels.get(c)) for c in ids]


def _split_cases(images_dir: Path, labels_dir: Path, in_channels: int) -> list[Case]:
    cases = group_channels(nifti_files(images_dir), in_channels)
    if labels_dir.is_dir():
        return pair_by_case(cases, nifti_files(labels_dir))
    return [Case(c, p) for c, p in sorted(cases.items())]


def resolve_spec(root: Path, labels_file: str | os.PathLike | None) -> LabelSpec:
    """Label definition from ``labels_file``, else ``root/dataset.json``."""
    if labels_file is not None:
        return LabelSpec.from_file(labels_file)
    candidate = root / "dataset.json"
    if candidate.is_file():
        return LabelSpec.from_file(candidate)
    raise DataError(f"{root}: no dataset.json; pass a label definition file "
                    "(e.g. --labels examples/mscmr.json)")


def detect_layout(root: Path) -> str:
    if (root / "imagesTr").is_dir():
        return "nnunet"
    if (root / "train").is_dir() or (root / "TestSet").is_dir() or (root / "test").is_dir():
        return "mscmr"
    raise DataError(f"{root}: neither the nnU-Net layout (imagesTr/) nor the MSCMR layout "
                    "(train/images, val/images, TestSet/images)")


def discover(root: str | os.PathLike, labels_file: str | os.PathLike | None = None) -> Dataset:
    """Find every split of the dataset at ``root``.

    Args:
        root: dataset folder in the MSCMR or nnU-Net layout.
        labels_file: label definition (``dataset.json`` schema); default ``root/dataset.json``.

    Raises:
        DataError: ``root`` is missing, in no known layout, or a split is inconsistent.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    layout = detect_layout(root)
    spec = resolve_spec(root, labels_file)
    dataset = Dataset(root=root, layout=layout, spec=spec)
    for split in SPLITS:
        if layout == "nnunet":
            img_name, lab_name = _NNUNET_DIRS[split]
            if not (root / img_name).is_dir():
                continue
            images_dir, labels_dir = root / img_name, root / lab_name
        else:
            base = next((root / d for d in _MSCMR_DIRS[split] if (root / d).is_dir()), None)
            if base is None:
                continue
            images_dir, labels_dir = base / "images", base / "labels"
        dataset.splits[split] = _split_cases(images_dir, labels_dir, spec.in_channels)
    if not dataset.splits.get("train"):
        raise DataError(f"{root}: no training split found")
    check_disjoint_splits(dataset.splits, root)
    log.info("dataset %s (%s layout): %s", root, layout,
             ", ".join(f"{s} {len(c)}" for s, c in dataset.splits.items()))
    return dataset
