"""Choose a run's post-processing on its validation cases, as nnU-Net does.

After training, the best checkpoint predicts the validation cases once; then, greedily, each
step kept only if it raises the validation selection score (the mean Dice that selected the
checkpoint):

1. keep foreground only in the centred part of the field of view, the best of
   :data:`~medcl.inference.postprocessing.CENTRE_FRACTIONS`;
2. keep the largest connected component of the foreground union;
3. for each foreground class in turn, keep its largest component.

A step is kept only when it raises the score by more than :data:`MIN_GAIN`, so a dataset whose
structures are several pieces (two kidneys, scattered scar) is left alone. The choice and the
scores behind it go to ``RUN/postprocessing.json``; :meth:`Predictor.from_run` applies it.
The validation cases choose it, so its validation score is optimistic: report test numbers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from medcl.data.labels import LabelSpec
from medcl.data.slices import PreparedCase
from medcl.errors import DataError
from medcl.files import check_writable
from medcl.inference.postprocessing import (
    CENTRE_FRACTIONS,
    Postprocessing,
    write_postprocessing,
)
from medcl.inference.predictor import Predictor
from medcl.training.config import TrainConfig
from medcl.training.data import load_run_validation
from medcl.training.run_folder import CONFIG_NAME
from medcl.training.validation import case_dice, summarize

log = logging.getLogger(__name__)

#: the smallest rise of the validation score that keeps a step (ties keep the simpler choice)
MIN_GAIN = 1e-4


def _score(choice: Postprocessing, predictions: dict[str, np.ndarray],
           references: dict[str, np.ndarray], spec: LabelSpec) -> float:
    per_case = {case: case_dice(choice.apply(pred), references[case], spec)
                for case, pred in predictions.items()}
    return summarize(per_case, spec)["mean_dice"]


def choose_postprocessing(predictions: dict[str, np.ndarray], references: dict[str, np.ndarray],
                          spec: LabelSpec) -> tuple[Postprocessing, dict]:
    """The post-processing that raises the validation score of ``predictions``.

    Args:
        predictions: case id -> predicted class indices ``(X, Y, Z)``.
        references: case id -> reference class indices ``(X, Y, Z)``.
        spec: the label definition (classes, groupings: what the score averages).

    Returns:
        The choice and ``{"raw": score, "<step>": score, ..., "chosen": score}``: the
        validation selection score before and after each step tried.
    """
    choice = Postprocessing()
    best = _score(choice, predictions, references, spec)
    tried = {"raw": best}
    centred = None
    for fraction in CENTRE_FRACTIONS:
        candidate = Postprocessing(centre_fraction=fraction)
        tried[f"centre {fraction:g}"] = _score(candidate, predictions, references, spec)
        if tried[f"centre {fraction:g}"] > best + MIN_GAIN and (
                centred is None or tried[f"centre {fraction:g}"] > centred[1]):
            centred = (candidate, tried[f"centre {fraction:g}"])
    if centred is not None:
        choice, best = centred
    candidates = [("largest foreground", lambda c: replace(c, largest_foreground=True))] + [
        (f"largest {name}", lambda c, k=k: replace(c, largest_per_class=(*c.largest_per_class, k)))
        for k, name in enumerate(spec.class_names) if k > 0]
    for name, step in candidates:
        candidate = step(choice)
        tried[name] = _score(candidate, predictions, references, spec)
        if tried[name] > best + MIN_GAIN:
            choice, best = candidate, tried[name]
    tried["chosen"] = best
    return choice, tried


def select_postprocessing(run_dir: str | os.PathLike, cases: list[PreparedCase] | None = None,
                          *, device: str = "cpu") -> Postprocessing:
    """Predict ``cases`` (validation, with dense labels; default: read again from the run's
    configuration) with the run's best checkpoint, choose the post-processing on them and write
    ``run_dir/postprocessing.json``.

    Raises:
        DataError: the run has no configuration, or no labelled validation case.
        WriteError: ``run_dir`` cannot be written (found before anything is computed).
    """
    if cases is None:
        path = Path(run_dir) / CONFIG_NAME
        if not path.is_file():
            raise DataError(f"{path}: no run in {run_dir}")
        check_writable(run_dir)
        cases = load_run_validation(TrainConfig.from_file(path))
    if not cases:
        raise DataError(f"{run_dir}: the run has no labelled validation case to choose on")
    predictor = Predictor.from_run(run_dir, device=device, postprocessing="none")
    predictions = {c.case_id: predictor.label_volume(c.reference, slices=c.image) for c in cases}
    references = {c.case_id: c.dense_labels for c in cases}
    choice, scores = choose_postprocessing(predictions, references, predictor.spec)
    path = write_postprocessing(run_dir, choice, predictor.spec.class_names,
                                {k: round(v, 4) for k, v in scores.items()})
    log.info("post-processing chosen on %d validation cases: %s (selection Dice %.3f -> %.3f); "
             "wrote %s", len(cases), choice.describe(predictor.spec.class_names), scores["raw"],
             scores["chosen"], Path(path))
    return choice
