"""Validation during training: 3D Dice of the network's predictions on the validation cases."""

from __future__ import annotations

import statistics

import numpy as np

from medcl.data.slices import PreparedCase
from medcl.evaluation.metrics import dice
from medcl.inference.predictor import Predictor


def validate(predictor: Predictor, cases: list[PreparedCase]) -> dict:
    """3D per-volume Dice of each foreground class (and grouping), averaged over ``cases``.

    When the label definition declares groupings (MyoPS: Scar, Edema), their Dice is reported
    beside the classes and ``mean_dice`` (what selects the best checkpoint) is their mean.

    Returns ``{"dice": {class or grouping: mean}, "mean_dice": float, "cases": {case: {...}}}``.
    """
    spec = predictor.spec
    per_case = {}
    for case in cases:
        pred = predictor.label_volume(case.reference, slices=case.image)
        per_case[case.case_id] = {name: dice(pred == k, case.dense_labels == k)
                                  for k, name in enumerate(spec.class_names) if k > 0}
        for group, members in spec.groups.items():
            index = [spec.class_names.index(n) for n in members]
            per_case[case.case_id][group] = dice(np.isin(pred, index),
                                                 np.isin(case.dense_labels, index))
    names = (*spec.foreground_names, *spec.groups)
    means = {n: statistics.fmean(c[n] for c in per_case.values()) for n in names}
    selected = tuple(spec.groups) or spec.foreground_names
    return {"dice": means, "mean_dice": statistics.fmean(means[n] for n in selected),
            "cases": per_case}
