"""Validation during training: 3D Dice of the network's predictions on the validation cases."""

from __future__ import annotations

import statistics

from medcl.data.slices import PreparedCase
from medcl.evaluation.metrics import dice
from medcl.inference.predictor import Predictor


def validate(predictor: Predictor, cases: list[PreparedCase]) -> dict:
    """3D per-volume Dice of each foreground class, averaged over ``cases``.

    Returns ``{"dice": {class: mean}, "mean_dice": float, "cases": {case: {class: dice}}}``.
    """
    spec = predictor.spec
    per_case = {}
    for case in cases:
        pred = predictor.label_volume(case.reference, slices=case.image)
        per_case[case.case_id] = {name: dice(pred == k, case.dense_labels == k)
                                  for k, name in enumerate(spec.class_names) if k > 0}
    names = spec.foreground_names
    means = {n: statistics.fmean(c[n] for c in per_case.values()) for n in names}
    return {"dice": means, "mean_dice": statistics.fmean(means.values()), "cases": per_case}
