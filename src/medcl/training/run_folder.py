"""The run folder: ``config.json`` (every option, resolved), ``cases.json`` (the case ids of each
split the run was trained on), ``metrics.jsonl`` (one record per logged step or validation),
``selection.json`` (the checkpoint ``best.pt`` holds and why: :mod:`medcl.training.selection`),
``postprocessing.json`` and ``checkpoints/{best,last}.pt``; and the helpers that keep it
consistent across kills and resumes. The run records these files as medcl's in the folder's
record (:mod:`medcl.ownership`) when it starts, so ``demo --overwrite`` removes them and nothing
else; a fresh run refuses a file medcl did not write where one of them goes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterator

from medcl.data.labels import LabelSpec
from medcl.errors import DataError
from medcl.files import (
    atomic_write_text,
    missing_folders,
    remove_empty_folders,
    remove_stale_temporaries,
)
from medcl.inference.postprocessing import POSTPROCESSING_FILE
from medcl.ownership import MANIFEST_NAME, OutputFolder
from medcl.runtime import distributed
from medcl.runtime.checkpoint import CHECKPOINT_DIR, CHECKPOINT_NAMES, checkpoint_path

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
CASES_NAME = "cases.json"
SELECTION_NAME = "selection.json"
#: configuration keys that hold paths; stored absolute so a run resumes from any directory.
PATH_KEYS = ("data", "labels", "init_from")
#: the files a run writes at the top of its folder (checkpoints/ and the slice cache aside)
RUN_FILES = (CONFIG_NAME, CASES_NAME, METRICS_NAME)


def absolute_paths(options: dict) -> dict:
    """``options`` with its :data:`PATH_KEYS` made absolute (``None`` and ``""`` kept)."""
    return {k: str(Path(v).absolute()) if k in PATH_KEYS and v else v
            for k, v in options.items()}


def run_files(run_dir: Path) -> list[Path]:
    """The files a run writes in its folder (rewritten while it trains)."""
    return ([run_dir / n for n in (CONFIG_NAME, CASES_NAME, METRICS_NAME, SELECTION_NAME,
                                   POSTPROCESSING_FILE)]
            + [checkpoint_path(run_dir, n) for n in CHECKPOINT_NAMES])


def check_run_files(run_dir: Path) -> None:
    """A fresh run writes over its own leftovers only (a run killed before its configuration
    was saved), never over a file medcl did not write.

    Raises:
        DataError: naming the file.
    """
    OutputFolder(run_dir, "train").check(run_files(run_dir), overwrite=True)


def record_run_files(run_dir: Path) -> None:
    """Record the run's files as medcl's, before it writes them."""
    OutputFolder(run_dir, "train").record(run_files(run_dir))


def clean_temporaries(run_dir: Path) -> None:
    """Remove the temporaries a killed process left in the run folder (medcl's own names only)."""
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        for path in remove_stale_temporaries(folder):
            log.info("removed %s, a temporary left by an interrupted write", path)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the ``metrics.jsonl`` records after ``step`` (logged after the checkpoint resumed)."""
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut by a kill
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        log.info("%s: dropped %d records after step %d", path, len(lines) - len(kept), step)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def write_cases(run_dir: Path, cases: dict[str, list[str]]) -> None:
    """Record the case ids of each split (``{"train": [...], "val": [...]}``)."""
    atomic_write_text(run_dir / CASES_NAME, json.dumps(cases, indent=2) + "\n")


def check_same_dataset(run_dir: Path, cases: dict[str, list[str]], spec: LabelSpec,
                       stored_spec: dict | None) -> None:
    """On resume, the dataset (perhaps at a new ``--data`` path) must be the one trained on.

    Raises:
        DataError: the label definition or the case ids of a split differ from the run's.
    """
    if stored_spec is not None and LabelSpec.from_dict(stored_spec).to_dict() != spec.to_dict():
        raise DataError(f"{run_dir}: the dataset's label definition differs from the one this "
                        "run was trained with")
    path = run_dir / CASES_NAME
    if not path.is_file():  # a run from before cases.json: nothing to compare with
        return
    stored = json.loads(path.read_text())
    for split, ids in stored.items():
        if sorted(cases.get(split, [])) != sorted(ids):
            changed = sorted(set(ids) ^ set(cases.get(split, [])))
            raise DataError(f"{path}: the {split} cases differ from the dataset's "
                            f"(e.g. {changed[:3]}); resume with the dataset the run used")


def run_state(run_dir: Path) -> str:
    """``"empty"``, ``"configured"`` (config.json, no checkpoint) or ``"checkpointed"``."""
    if checkpoint_path(run_dir, "last").is_file():
        return "checkpointed"
    return "configured" if (Path(run_dir) / CONFIG_NAME).is_file() else "empty"


@contextlib.contextmanager
def removed_if_no_step(run_dir: Path, step: Callable[[], int]) -> Iterator[None]:
    """Take back what a run wrote in ``run_dir`` if it fails before its first step.

    Such a run has nothing to resume; its ``config.json`` left behind would make the retry
    "already hold a run" (and ``--resume`` reuse the configuration that failed). On an exception
    while ``step()`` is 0, the :data:`RUN_FILES` (and the output record) that did not exist
    before and the folders that did not exist (if empty) are removed; whatever was there
    before is left as it was.
    """
    new_files = [run_dir / name for name in (*RUN_FILES, MANIFEST_NAME)
                 if not (run_dir / name).exists()]
    new_folders = missing_folders(run_dir / CHECKPOINT_DIR)
    try:
        yield
    except BaseException:
        if step() == 0 and distributed.from_env().is_main:
            for path in new_files:
                path.unlink(missing_ok=True)
            remove_empty_folders(new_folders)
            log.info("%s: removed what the run wrote before it failed at step 0", run_dir)
        raise
