"""Validation during training: 3D Dice of the network's predictions on the validation cases."""

from __future__ import annotations

import statistics

import numpy as np

from medcl.data.labels import LabelSpec
from medcl.data.slices import PreparedCase
from medcl.evaluation.metrics import dice
from medcl.inference.predictor import Predictor


def case_dice(pred: np.ndarray, reference: np.ndarray, spec: LabelSpec) -> dict[str, float]:
    """3D Dice of each foreground class and grouping of class indices ``pred`` against
    ``reference``, both ``(X, Y, Z)``."""
    scores = {name: dice(pred == k, reference == k)
              for k, name in enumerate(spec.class_names) if k > 0}
    for group, members in spec.groups.items():
        index = [spec.class_names.index(n) for n in members]
        scores[group] = dice(np.isin(pred, index), np.isin(reference, index))
    return scores


def summarize(per_case: dict[str, dict[str, float]], spec: LabelSpec) -> dict:
    """Mean Dice per class and grouping over the cases, and the selection score ``mean_dice``:
    the mean over the groupings where the label definition declares some (MyoPS: Scar, Edema),
    else over the foreground classes."""
    names = (*spec.foreground_names, *spec.groups)
    means = {n: statistics.fmean(c[n] for c in per_case.values()) for n in names}
    selected = tuple(spec.groups) or spec.foreground_names
    return {"dice": means, "mean_dice": statistics.fmean(means[n] for n in selected),
            "cases": per_case}


def predict_cases(predictor: Predictor, cases: list[PreparedCase]
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The predictor's label maps of ``cases`` (validation, with dense labels) and their
    references: two dicts case id -> class indices ``(X, Y, Z)`` on the input grid."""
    predictions = {case.case_id: predictor.label_volume(case.reference, slices=case.image)
                   for case in cases}
    return predictions, {case.case_id: case.dense_labels for case in cases}


def score(predictions: dict[str, np.ndarray], references: dict[str, np.ndarray],
          spec: LabelSpec) -> dict:
    """:func:`summarize` of the Dice of each case's ``predictions`` against ``references``
    (case id -> class indices ``(X, Y, Z)``)."""
    return summarize({case: case_dice(pred, references[case], spec)
                      for case, pred in predictions.items()}, spec)


def validate(predictor: Predictor, cases: list[PreparedCase]) -> dict:
    """3D per-volume Dice of each foreground class (and grouping), averaged over ``cases``.

    When the label definition declares groupings (MyoPS: Scar, Edema), their Dice is reported
    beside the classes and ``mean_dice`` is their mean.

    Returns ``{"dice": {class or grouping: mean}, "mean_dice": float, "cases": {case: {...}}}``.
    """
    return score(*predict_cases(predictor, cases), predictor.spec)
