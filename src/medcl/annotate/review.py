"""A run's predictions and per-slice uncertainty for every case of the annotation page.

The run folder given to ``medcl annotate --run RUN_DIR`` may hold a run of ``medcl train`` (its
``checkpoints/``), and the page adds rounds trained from the current scribbles in
``RUN_DIR/annotate_rounds/round_NNN/`` (each a run folder of ``medcl train``). The newest round
with a checkpoint is the current model. Each model's review lives in its own folder::

    MODEL_DIR/annotate_review/{case}.nii.gz     prediction (the dataset's label values)
    MODEL_DIR/annotate_review/uncertainty.json  {"step": ..., "cases": {case: [per-slice]}}
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from medcl.annotate.cases import CaseStore
from medcl.annotate.uncertainty import slice_uncertainty
from medcl.data.io import load_nifti, save_nifti
from medcl.errors import ConfigError, DataError
from medcl.files import atomic_write_text
from medcl.inference.predictor import Predictor, label_dtype
from medcl.runtime.checkpoint import CHECKPOINT_NAMES, checkpoint_path

log = logging.getLogger(__name__)

ROUNDS_DIR = "annotate_rounds"
REVIEW_DIR = "annotate_review"
UNCERTAINTY_NAME = "uncertainty.json"
_ROUND_RE = re.compile(r"^round_(\d{3,})$")


def has_checkpoint(run_dir: Path) -> bool:
    return any(checkpoint_path(run_dir, name).is_file() for name in CHECKPOINT_NAMES)


class RunRoot:
    """The run folder of the annotation page: its models and where the next round goes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: --run must be a folder")

    def rounds(self) -> list[Path]:
        """Round folders in order (trained or not)."""
        folder = self.root / ROUNDS_DIR
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.is_dir() and _ROUND_RE.match(p.name)]
        return sorted(found, key=lambda p: int(_ROUND_RE.match(p.name)[1]))

    def models(self) -> list[Path]:
        """Folders holding a trained model, oldest first."""
        candidates = [self.root, *self.rounds()]
        return [p for p in candidates if has_checkpoint(p)]

    def current(self) -> Path | None:
        models = self.models()
        return models[-1] if models else None

    def next_round(self) -> Path:
        rounds = self.rounds()
        number = int(_ROUND_RE.match(rounds[-1].name)[1]) + 1 if rounds else 1
        return self.root / ROUNDS_DIR / f"round_{number:03d}"

    def name(self, model_dir: Path) -> str:
        """A short name of a model folder for the page (``run`` or ``round_NNN``)."""
        return "run" if model_dir == self.root else model_dir.name


def review_path(model_dir: Path, case_id: str) -> Path:
    return model_dir / REVIEW_DIR / f"{case_id}.nii.gz"


def load_review(model_dir: Path) -> dict[str, list[float]]:
    """Per-case per-slice uncertainty of a reviewed model (empty if not reviewed yet)."""
    path = model_dir / REVIEW_DIR / UNCERTAINTY_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())["cases"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a review file ({exc})") from None


def check_compatible(predictor: Predictor, store: CaseStore, model_dir: Path) -> None:
    """The run must predict the dataset's classes from as many channels."""
    run, data = predictor.spec, store.spec
    if run.class_names != data.class_names or run.in_channels != data.in_channels:
        raise ConfigError(f"{model_dir}: run classes {list(run.class_names)} with "
                          f"{run.in_channels} channel(s) do not match the dataset's "
                          f"{list(data.class_names)} with {data.in_channels}")


def review_model(model_dir: Path, store: CaseStore, *,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Predict every case with the model in ``model_dir``; write predictions and uncertainty.

    Returns:
        case id -> per-slice uncertainty along ``Z`` (see :mod:`medcl.annotate.uncertainty`).
    """
    predictor = Predictor.from_run(model_dir, device="auto")
    check_compatible(predictor, store, model_dir)
    dtype = label_dtype(predictor.spec)
    result: dict[str, list[float]] = {}
    for done, case_id in enumerate(store.cases, start=1):
        image = store.image(case_id)
        probs = predictor.predict_volume(image)  # (X, Y, Z, K) probs
        labels = predictor.segment(probs)
        save_nifti(review_path(model_dir, case_id), predictor.spec.to_values(labels), image,
                   dtype=dtype)
        result[case_id] = slice_uncertainty(probs)
        if progress is not None:
            progress(done, len(store.cases))
    atomic_write_text(model_dir / REVIEW_DIR / UNCERTAINTY_NAME,
                      json.dumps({"cases": result}) + "\n")
    log.info("reviewed %s on %d cases", model_dir, len(result))
    return result


def prediction_indices(model_dir: Path, store: CaseStore, case_id: str) -> np.ndarray | None:
    """The model's prediction of a case as class indices ``(X, Y, Z)`` uint8, or ``None``."""
    path = review_path(model_dir, store.get(case_id).case_id)
    if not path.is_file():
        return None
    values = load_nifti(path, kind="label").data
    return store.spec.to_indices(values, source=str(path), allow_ignore=False).astype(np.uint8)
