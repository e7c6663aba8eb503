"""Choose a run's post-processing on its validation cases, as nnU-Net does.

On the label maps of the validation cases (predicted once, at every validation during training:
:mod:`medcl.training.selection`; or by :func:`select_postprocessing` with a finished run's best
checkpoint), greedily, each step kept only if it raises the validation selection score (mean
Dice of the classes, or of the groupings):

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from medcl.data.labels import LabelSpec
from medcl.data.slices import PreparedCase
from medcl.errors import DataError
from medcl.files import check_writable
from medcl.inference.postprocessing import (
    CENTRE_FRACTIONS,
    Postprocessing,
    keep_centre,
    keep_largest_foreground,
    keep_largest_of,
    write_postprocessing,
)
from medcl.inference.predictor import Predictor
from medcl.training.config import TrainConfig
from medcl.training.data import load_run_validation
from medcl.training.run_folder import CONFIG_NAME
from medcl.training.validation import predict_cases, score

log = logging.getLogger(__name__)

#: the smallest rise of the validation score that keeps a step (ties keep the simpler choice)
MIN_GAIN = 1e-4
#: decimals of the scores stored in postprocessing.json
SCORE_DECIMALS = 4


@dataclass(frozen=True)
class Search:
    """What :func:`search_postprocessing` found.

    Attributes:
        choice: the post-processing chosen.
        tried: ``{"raw": score, "<step>": score, ..., "chosen": score}``: the validation
            selection score before and after each step tried.
        summary: :func:`~medcl.training.validation.summarize` of the chosen post-processing's
            label maps (per-class Dice, ``mean_dice``, per case).
    """

    choice: Postprocessing
    tried: dict[str, float]
    summary: dict


def search_postprocessing(predictions: dict[str, np.ndarray],
                          references: dict[str, np.ndarray], spec: LabelSpec) -> Search:
    """The post-processing that raises the validation score of ``predictions``.

    Each greedy step is applied to the label maps of the choice so far (the steps of
    :meth:`Postprocessing.apply` run in the order they are tried, and a class's largest
    component does not depend on the other classes'), so no step is recomputed.

    Args:
        predictions: case id -> predicted class indices ``(X, Y, Z)``.
        references: case id -> reference class indices ``(X, Y, Z)``.
        spec: the label definition (classes, groupings: what the score averages).
    """
    choice, current = Postprocessing(), predictions
    best = score(current, references, spec)
    tried = {"raw": best["mean_dice"]}
    centred = None
    for fraction in CENTRE_FRACTIONS:
        outputs = {case: keep_centre(pred, fraction) for case, pred in predictions.items()}
        summary = score(outputs, references, spec)
        tried[f"centre {fraction:g}"] = summary["mean_dice"]
        if summary["mean_dice"] > best["mean_dice"] + MIN_GAIN and (
                centred is None or summary["mean_dice"] > centred[2]["mean_dice"]):
            centred = (Postprocessing(centre_fraction=fraction), outputs, summary)
    if centred is not None:
        choice, current, best = centred
    steps = [("largest foreground", lambda c: replace(c, largest_foreground=True),
              keep_largest_foreground)] + [
        (f"largest {name}", lambda c, k=k: replace(c, largest_per_class=(*c.largest_per_class, k)),
         lambda labels, k=k: keep_largest_of(labels, (k,)))
        for k, name in enumerate(spec.class_names) if k > 0]
    for name, extend, apply in steps:
        outputs = {case: apply(labels) for case, labels in current.items()}
        summary = score(outputs, references, spec)
        tried[name] = summary["mean_dice"]
        if summary["mean_dice"] > best["mean_dice"] + MIN_GAIN:
            choice, current, best = extend(choice), outputs, summary
    tried["chosen"] = best["mean_dice"]
    return Search(choice, tried, best)


def choose_postprocessing(predictions: dict[str, np.ndarray], references: dict[str, np.ndarray],
                          spec: LabelSpec) -> tuple[Postprocessing, dict]:
    """:func:`search_postprocessing`'s choice and the scores tried (``Search.tried``)."""
    search = search_postprocessing(predictions, references, spec)
    return search.choice, search.tried


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
    predictions, references = predict_cases(predictor, cases)
    choice, scores = choose_postprocessing(predictions, references, predictor.spec)
    write_choice(run_dir, choice, scores, predictor.spec.class_names, cases=len(cases))
    return choice


def write_choice(run_dir: str | os.PathLike, choice: Postprocessing, tried: dict[str, float],
                 class_names: Sequence[str], *, cases: int, step: int | None = None) -> Path:
    """Write ``run_dir/postprocessing.json``: ``choice``, the scores ``tried`` (rounded to
    :data:`SCORE_DECIMALS`) and the checkpoint ``step`` whose predictions chose it; log it."""
    path = write_postprocessing(run_dir, choice, class_names,
                                {k: round(v, SCORE_DECIMALS) for k, v in tried.items()}, step=step)
    log.info("post-processing chosen on %d validation cases%s: %s (selection Dice %.3f -> %.3f); "
             "wrote %s", cases, "" if step is None else f" (checkpoint of step {step})",
             choice.describe(class_names), tried["raw"], tried["chosen"], path)
    return path
