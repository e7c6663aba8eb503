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
  A ``splits_final.json`` beside them (what ``medcl convert`` writes) moves the ``val`` cases of
  its first fold from ``imagesTr`` to the validation split. ``file_ending``, ``channel_names``,
  ``numTraining`` and the split file are checked against the files (:mod:`medcl.data.nnunet`).

* a **described layout**: the dataset description's ``files`` section gives, per split, file
  patterns relative to ROOT with ``{case}`` and ``{channel}`` (a channel name) placeholders, the
  label kind of the split's label files, and optionally the cases to take or leave out::

      "files": {"train": {"images": "train25/{case}_{channel}.nii.gz",
                          "labels": "scribbles/{case}_gd.nii.gz", "label_kind": "scribble",
                          "dense_labels": "train25_myops_gd/{case}_gd.nii.gz",
                          "exclude_cases": ["myops_training_101"]},
                "val": {..., "cases": ["myops_training_101"]},
                "test": {"images": "test20/{case}_{channel}.nii.gz"}}

The label definition (:class:`~medcl.data.labels.LabelSpec`) comes from an explicit file, else from
``ROOT/dataset.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medcl.data import nnunet
from medcl.data.io import case_stem, is_nifti, visible_entries
from medcl.data.labels import LabelSpec
from medcl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_MSCMR_DIRS = {"train": ("train",), "val": ("val", "validation"), "test": ("TestSet", "test")}
_NNUNET_DIRS = {"train": ("imagesTr", "labelsTr"), "val": ("imagesVal", "labelsVal"),
                "test": ("imagesTs", "labelsTs")}
TRAIN_LABELS = ("labels", "dense_labels")
_SPLIT_KEYS = {"images", "labels", "label_kind", "dense_labels", "dense_kind", "cases",
               "exclude_cases"}


@dataclass(frozen=True)
class Case:
    """One case: its id, its channel files in channel order, and its label file (or ``None``)."""

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None = None
    label_kind: str | None = None


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


def _named_channel(stem: str, channel_names: tuple[str, ...]) -> tuple[str, int] | None:
    for index, name in enumerate(channel_names):
        if stem.endswith("_" + name) and len(stem) > len(name) + 1:
            return stem[: -len(name) - 1], index
    return None


def group_channels(files: list[Path], in_channels: int,
                   channel_names: tuple[str, ...] = ()) -> dict[str, tuple[Path, ...]]:
    """Group image files into cases.

    With one channel, a file's stem is its case id unless it ends in ``_0000`` (nnU-Net style),
    which is stripped. With several channels every file must be ``{case}_{XXXX}`` or
    ``{case}_{channel name}`` (MyoPS's ``_C0``, ``_DE``, ``_T2``) and every case needs every
    channel.
    """
    groups: dict[str, dict[int, Path]] = {}
    if in_channels == 1:
        _refuse_channel_series(files)
    for path in files:
        stem = case_stem(path)
        match = nnunet.CHANNEL_RE.match(stem)
        named = _named_channel(stem, channel_names) if in_channels > 1 else None
        if in_channels == 1 and not (match and int(match["channel"]) == 0):
            case, channel = stem, 0
        elif match:
            case, channel = match["case"], int(match["channel"])
        elif named:
            case, channel = named
        else:
            raise DataError(f"{path}: expected a name '{{case}}_XXXX' or '{{case}}_NAME' with a "
                            f"channel name of {list(channel_names)} for a {in_channels}-channel "
                            "image")
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
        match = nnunet.CHANNEL_RE.match(case_stem(path))
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
            raise DataError(f"{path}: no image with a matching case id "
                            f"(case ids look like {ids[0]!r})")
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


def read_description(root: Path, labels_file: str | os.PathLike | None) -> tuple[dict, str]:
    """The dataset description (JSON) from ``labels_file``, else ``root/dataset.json``."""
    path = Path(labels_file) if labels_file is not None else root / "dataset.json"
    if labels_file is None and not path.is_file():
        raise DataError(f"{root}: no dataset.json; pass a label definition file "
                        "(e.g. --labels examples/mscmr.json)")
    try:
        return json.loads(path.read_text()), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: label definition file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def resolve_spec(root: Path, labels_file: str | os.PathLike | None) -> LabelSpec:
    """Label definition from ``labels_file``, else ``root/dataset.json``."""
    data, source = read_description(root, labels_file)
    return LabelSpec.from_dict(data, source=source)


def _pattern_regex(pattern: str, channel: str) -> re.Pattern:
    literal = re.split(r"(\{case\}|\{channel\})", pattern)
    parts = {"{case}": r"(?P<case>[^/]+?)", "{channel}": re.escape(channel)}
    return re.compile("".join(parts.get(p, re.escape(p)) for p in literal))


def _described_images(root: Path, pattern: str, channels: tuple[str, ...],
                      source: str) -> dict[str, tuple[Path, ...]]:
    """Case id -> channel files for an ``images`` pattern of a described layout."""
    folder, name = os.path.split(pattern)
    if "{" in folder or "{case}" not in name or (len(channels) > 1 and "{channel}" not in name):
        raise ConfigError(f"{source}: image pattern {pattern!r} needs {{case}} (and {{channel}} "
                          "for several channels) in the file name, not in the folder")
    regexes = [_pattern_regex(name, c) for c in channels]
    found: dict[str, dict[int, Path]] = {}
    for path in nifti_files(root / folder):
        hits = [(i, m) for i, r in enumerate(regexes) if (m := r.fullmatch(path.name))]
        if not hits:
            raise DataError(f"{path}: matches no declared channel {list(channels)} of the "
                            f"pattern {pattern!r} in {source}")
        index, match = hits[0]
        found.setdefault(match["case"], {})[index] = path
    cases = {}
    for case, chans in sorted(found.items()):
        for i, channel in enumerate(channels):
            if i not in chans:
                missing = root / folder / name.format(case=case, channel=channel)
                raise DataError(f"{missing}: channel {channel!r} of case {case!r} is missing")
        cases[case] = tuple(chans[i] for i in range(len(channels)))
    return cases


def _described_split(root: Path, desc: dict, spec: LabelSpec, source: str,
                     train_labels: str = "labels") -> list[Case]:
    if not isinstance(desc, dict) or "images" not in desc or set(desc) - _SPLIT_KEYS:
        raise ConfigError(f"{source}: each split in 'files' needs 'images' and may have "
                          f"{sorted(_SPLIT_KEYS - {'images'})}")
    cases = _described_images(root, desc["images"], spec.channel_names, source)
    wanted = desc.get("cases")
    if wanted is not None:
        unknown = [c for c in wanted if c not in cases]
        if unknown:
            raise DataError(f"{root / desc['images']}: cases {unknown} of {source} have no images")
        cases = {c: cases[c] for c in sorted(wanted)}
    for case in desc.get("exclude_cases", []):
        cases.pop(case, None)
    label_key = "dense_labels" if train_labels == "dense_labels" else "labels"
    pattern = desc.get(label_key)
    if train_labels == "dense_labels" and pattern is None:
        raise ConfigError(f"{source}: the training split declares no 'dense_labels'")
    if pattern is not None and ("{case}" not in pattern or "{channel}" in pattern):
        raise ConfigError(f"{source}: label pattern {pattern!r} needs {{case}} and no {{channel}}")
    kind = desc.get("dense_kind") if label_key == "dense_labels" else desc.get("label_kind")
    spec.kind(kind)  # the kind must be declared
    out = []
    for case, paths in cases.items():
        label = root / pattern.format(case=case) if pattern else None
        if label is not None and not label.is_file():
            raise DataError(f"{label}: label file of case {case!r} not found")
        out.append(Case(case, paths, label, kind))
    return out


def _apply_nnunet_files(dataset: Dataset, description: dict, source: str) -> None:
    """Check ``numTraining`` against ``imagesTr``; move the first fold's validation cases of
    nnU-Net's split file out of ``train`` (cases it lists in neither list are left out)."""
    train = dataset.splits.get("train", [])
    nnunet.check_num_training(description, source, dataset.root, len(train))
    path = dataset.root / nnunet.SPLITS_FILE
    if not path.is_file():
        return
    train_ids, val_ids = nnunet.read_split(path, [c.case_id for c in train])
    dataset.splits["train"] = [c for c in train if c.case_id in train_ids]
    dataset.splits["val"] = ([c for c in train if c.case_id in val_ids]
                             + dataset.splits.get("val", []))


def detect_layout(root: Path, description: dict | None = None) -> str:
    if description and "files" in description:
        return "described"
    if (root / "imagesTr").is_dir():
        return "nnunet"
    if (root / "train").is_dir() or (root / "TestSet").is_dir() or (root / "test").is_dir():
        return "mscmr"
    raise DataError(f"{root}: neither the nnU-Net layout (imagesTr/) nor the MSCMR layout "
                    "(train/images, val/images, TestSet/images)")


def discover(root: str | os.PathLike, labels_file: str | os.PathLike | None = None, *,
             train_labels: str = "labels") -> Dataset:
    """Find every split of the dataset at ``root``.

    Args:
        root: dataset folder in the MSCMR, nnU-Net or a described layout.
        labels_file: dataset description (``dataset.json`` schema, optionally with ``files``,
            ``label_kinds`` and ``groups``); default ``root/dataset.json``.
        train_labels: ``labels`` (the scribbles) or ``dense_labels`` (a described layout's dense
            labels of the training split, for the fully supervised upper bound).

    Raises:
        DataError: ``root`` is missing, in no known layout, or a split is inconsistent.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if train_labels not in TRAIN_LABELS:
        raise ConfigError(f"train_labels={train_labels!r} is not valid; choose from {TRAIN_LABELS}")
    description, source = read_description(root, labels_file)
    spec = LabelSpec.from_dict(description, source=source)
    layout = detect_layout(root, description)
    if train_labels != "labels" and layout != "described":
        raise ConfigError(f"train_labels={train_labels!r} needs a described layout ('files' in "
                          f"{source})")
    dataset = Dataset(root=root, layout=layout, spec=spec)
    if layout == "nnunet":
        nnunet.check_files(root, description, source, spec.channel_names)
    for split in SPLITS:
        if layout == "described":
            files = description["files"]
            if split in files:
                dataset.splits[split] = _described_split(
                    root, files[split], spec, f"{source} files.{split}",
                    train_labels if split == "train" else "labels")
            continue
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
    if layout == "nnunet":
        _apply_nnunet_files(dataset, description, source)
    if not dataset.splits.get("train"):
        raise DataError(f"{root}: no training split found")
    check_disjoint_splits(dataset.splits, root)
    log.info("dataset %s (%s layout): %s", root, layout,
             ", ".join(f"{s} {len(c)}" for s, c in dataset.splits.items()))
    return dataset
