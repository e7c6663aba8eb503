"""The cases of a dataset folder as the annotation page sees them.

Case ids are looked up in a table built by discovery; a request's id is never joined into a
path. Every file read or written must resolve inside the dataset folder (a symlink that points
out of it is refused). Saves are atomic (:func:`medcl.files.atomic_path`), serialised per case
(a thread lock and an ``fcntl`` file lock, so two tabs or two servers cannot interleave), and the
file a save replaces is first kept in ``ROOT/.medcl_annotate/history/{case}/``.

Which cases and where their scribbles go:

* nnU-Net layout: ``imagesTr/`` cases, scribbles in ``labelsTr/{case}.nii.gz``;
* MSCMR layout: ``train/images/`` cases, scribbles in the case's existing label file, else
  ``train/labels/{case}_scribble.nii.gz``;
* a folder of images alone: its NIfTI files, scribbles in ``ROOT/scribbles/{case}.nii.gz``
  (annotation only: training needs one of the two layouts).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from medcl.annotate.drawing import (
    class_counts,
    labels_to_pens,
    pens_to_labels,
    require_ignore,
    scribble_dtype,
    scribbled_slices,
)
from medcl.data.datasets import (
    detect_layout,
    group_channels,
    match_case,
    nifti_files,
    pair_by_case,
    resolve_spec,
)
from medcl.data.io import Volume, case_stem, load_image, load_nifti, save_nifti
from medcl.data.labels import LabelSpec
from medcl.errors import DataError

log = logging.getLogger(__name__)

STATE_DIR = ".medcl_annotate"
HISTORY_DIR = "history"
LOCK_DIR = "locks"
#: versions kept per case besides the first one (the file as it was before medcl touched it)
MAX_VERSIONS = 50
NO_VERSION = "none"
_VERSION_RE = re.compile(r"^v(\d{6})\.nii\.gz$")
#: (images folder, labels folder, suffix of a new scribble file) per layout
_LAYOUT_DIRS = {"nnunet": ("imagesTr", "labelsTr", ""),
                "mscmr": ("train/images", "train/labels", "_scribble"),
                "images": (".", "scribbles", "")}


class UnknownCase(DataError):
    """A case id that the dataset does not hold."""


class OutsideDataset(DataError):
    """A file that resolves outside the dataset folder (a symlink pointing out of it)."""


class StaleVersion(DataError):
    """A save based on a version of the scribbles that another save has replaced."""


@dataclass(frozen=True)
class AnnotationCase:
    """One case: its id, channel files, and where its scribble map is (or will be) stored."""

    case_id: str
    image_paths: tuple[Path, ...]
    scribble_path: Path


def file_version(path: Path) -> str:
    """A token that changes whenever ``path`` is replaced (``"none"`` when it is absent)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return NO_VERSION
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


def _detect(root: Path) -> str:
    try:
        return detect_layout(root)
    except DataError:
        return "images"


class CaseStore:
    """The annotatable cases of ``root`` and their scribble maps.

    Args:
        root: dataset folder (nnU-Net or MSCMR layout, or a folder of images alone).
        labels_file: label definition (``dataset.json`` schema); default ``root/dataset.json``.

    Raises:
        DataError: ``root`` is missing or holds no images; ConfigError: no ignore value.
    """

    def __init__(self, root: str | os.PathLike, labels_file: str | os.PathLike | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        self.labels_file = Path(labels_file).resolve() if labels_file else None
        self.description = self.labels_file or self.root / "dataset.json"
        self.spec: LabelSpec = resolve_spec(self.root, labels_file)
        require_ignore(self.spec, str(self.description))
        self.layout = _detect(self.root)
        self.trainable = self.layout != "images"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._status_cache: dict[str, tuple[str, dict]] = {}
        self.cases = self._discover()
        log.info("annotating %d cases of %s (%s layout)", len(self.cases), self.root, self.layout)

    # -- lookup -------------------------------------------------------------------------------
    def _discover(self) -> dict[str, AnnotationCase]:
        images_name, labels_name, suffix = _LAYOUT_DIRS[self.layout]
        images_dir, labels_dir = self.root / images_name, self.root / labels_name
        files = [p for p in nifti_files(images_dir) if not p.name.startswith(".")]
        groups = group_channels(files, self.spec.in_channels)
        outside = set()
        for case, paths in groups.items():
            for path in (p for p in paths if not self._resolves_inside(p)):
                log.warning("%s: resolves outside %s; case %r skipped", path, self.root, case)
                outside.add(case)
        labels = [p for p in nifti_files(labels_dir) if not p.name.startswith(".")] \
            if labels_dir.is_dir() and any(labels_dir.iterdir()) else []
        # a skipped case's scribbles go with it (left to pair, they would match no image)
        labels = [p for p in labels if match_case(case_stem(p), sorted(groups)) not in outside]
        groups = {case: paths for case, paths in groups.items() if case not in outside}
        cases = {}
        for case in pair_by_case(groups, labels, require_all=False):
            target = case.label_path or labels_dir / f"{case.case_id}{suffix}.nii.gz"
            cases[case.case_id] = AnnotationCase(case.case_id, case.image_paths, target)
        if not cases:
            raise DataError(f"{images_dir}: no images to annotate")
        return cases

    def _resolves_inside(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved == self.root or self.root in resolved.parents

    def _inside(self, path: Path) -> bool:
        if self._resolves_inside(path):
            return True
        log.warning("%s: resolves outside %s; ignored", path, self.root)
        return False

    def _checked(self, path: Path) -> Path:
        if not self._inside(path):
            raise OutsideDataset(f"{path}: resolves outside the dataset folder")
        return path

    def get(self, case_id: str) -> AnnotationCase:
        """The case with this id; :class:`UnknownCase` for anything else."""
        case = self.cases.get(case_id) if isinstance(case_id, str) else None
        if case is None:
            raise UnknownCase(f"unknown case id {case_id!r}")
        return case

    def image_file(self, case_id: str, channel: int) -> Path:
        """The file of one channel of a case (checked to lie inside the dataset)."""
        paths = self.get(case_id).image_paths
        if not 0 <= channel < len(paths):
            raise UnknownCase(f"case {case_id!r} has channels 0..{len(paths) - 1}, not {channel}")
        return self._checked(paths[channel])

    def image(self, case_id: str) -> Volume:
        """The case's image ``(X, Y, Z, C)`` with its geometry."""
        case = self.get(case_id)
        return load_image([self._checked(p) for p in case.image_paths])

    # -- scribbles ----------------------------------------------------------------------------
    def version(self, case_id: str) -> str:
        return file_version(self._checked(self.get(case_id).scribble_path))

    def pens(self, case_id: str, image: Volume | None = None) -> np.ndarray:
        """The case's scribbles as pen values ``(X, Y, Z)`` uint8 (zeros when none are saved)."""
        case = self.get(case_id)
        path = self._checked(case.scribble_path)
        if not path.is_file():
            image = image or self.image(case_id)
            return np.zeros(image.shape, dtype=np.uint8)
        return labels_to_pens(load_nifti(path, kind="label").data, self.spec, source=str(path))

    def status(self, case_id: str) -> dict:
        """``{"version", "scribbled_slices", "counts"}`` of the case's saved scribbles
        (``"error"`` instead, naming the file, when they are unreadable or outside the folder)."""
        try:
            return self._status(case_id)
        except DataError as exc:
            if isinstance(exc, UnknownCase):
                raise
            return {"version": NO_VERSION, "scribbled_slices": [], "counts": {},
                    "error": str(exc)}

    def _status(self, case_id: str) -> dict:
        version = self.version(case_id)
        cached = self._status_cache.get(case_id)
        if cached and cached[0] == version:
            return cached[1]
        if version == NO_VERSION:
            status = {"version": version, "scribbled_slices": [], "counts": {}}
        else:
            pens = self.pens(case_id)
            status = {"version": version, "scribbled_slices": scribbled_slices(pens),
                      "counts": class_counts(pens, self.spec)}
        self._status_cache[case_id] = (version, status)
        return status

    @contextlib.contextmanager
    def lock(self, case_id: str) -> Iterator[None]:
        """Hold the case's save lock (threads of this server and other processes alike)."""
        with self._locks_guard:
            thread_lock = self._locks.setdefault(case_id, threading.Lock())
        lock_path = self.root / STATE_DIR / LOCK_DIR / f"{case_id}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with thread_lock, lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def history(self, case_id: str) -> list[Path]:
        """Kept earlier versions of the case's scribbles, oldest first."""
        folder = self.root / STATE_DIR / HISTORY_DIR / self.get(case_id).case_id
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _VERSION_RE.match(p.name))

    def _keep_previous(self, case: AnnotationCase) -> None:
        """Copy the current scribble file into the history, pruning old medcl-written ones."""
        if not case.scribble_path.is_file():
            return
        kept = self.history(case.case_id)
        number = int(_VERSION_RE.match(kept[-1].name)[1]) + 1 if kept else 1
        folder = self.root / STATE_DIR / HISTORY_DIR / case.case_id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(case.scribble_path, folder / f"v{number:06d}.nii.gz")
        # keep v000001 (the file before medcl's first save) and the newest MAX_VERSIONS others
        surplus = len(kept) - MAX_VERSIONS
        for old in kept[1:1 + surplus] if surplus > 0 else []:
            old.unlink()

    def save(self, case_id: str, pens: np.ndarray, *, expected_version: str | None = None,
             image: Volume | None = None) -> str:
        """Write the case's scribble map from pen values ``(X, Y, Z)``; returns the new version.

        The map takes the image's affine and header (valid qform and sform); the replaced file
        is kept in the history first.

        Raises:
            StaleVersion: ``expected_version`` is given and another save replaced it.
            DataError: ``pens`` does not have the image's shape or holds invalid pen values.
        """
        case = self.get(case_id)
        target = self._checked(case.scribble_path)
        image = image or self.image(case_id)
        if tuple(pens.shape) != image.shape:
            raise DataError(f"{target}: scribbles of shape {tuple(pens.shape)} for an image "
                            f"of shape {image.shape}")
        values = pens_to_labels(pens, self.spec, source=str(target))
        with self.lock(case_id):
            current = file_version(target)
            if expected_version is not None and expected_version != current:
                raise StaleVersion(f"{target}: changed since it was loaded (version {current}, "
                                   f"expected {expected_version}); reload the case")
            self._keep_previous(case)
            save_nifti(target, values, image, dtype=scribble_dtype(self.spec))
            version = file_version(target)
        log.info("saved %s (%d scribbled voxels)", target, int((pens > 0).sum()))
        return version

    def ensure_scribble_files(self) -> list[Path]:
        """Write an all-unlabelled map for every case without one (training needs a label file
        per training case); returns the files written. Existing files are never touched."""
        written = []
        for case_id, case in self.cases.items():
            if not case.scribble_path.exists():
                image = self.image(case_id)
                self.save(case_id, np.zeros(image.shape, dtype=np.uint8),
                          expected_version=NO_VERSION, image=image)
                written.append(case.scribble_path)
        return written
