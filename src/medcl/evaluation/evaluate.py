"""Evaluate a folder of predicted label maps against a folder of ground-truth label maps.

A case is a NIfTI file or a folder holding one DICOM series (:mod:`medcl.data.dicom`); the
folder's name is the case id. Each prediction ``{case}.nii.gz`` is paired with the ground-truth
file whose stem is the case id or the case id followed by a ``_suffix``
(``subject10_DE.nii.gz`` <-> ``subject10_DE_manual.nii.gz``). Every file must have a partner.
Metrics are computed per class and case in mm, using the spacing of the ground-truth header; see
:mod:`medcl.evaluation.metrics` for the definitions, the two HD95 conventions and the empty-mask
rule.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medcl.data.datasets import match_case
from medcl.data.dicom import load_volume, volume_files
from medcl.data.geometry import GeometryNotes, align, header_geometry
from medcl.data.io import case_stem
from medcl.data.labels import LabelSpec
from medcl.errors import ConfigError, DataError
from medcl.evaluation.markdown import DICE_DECIMALS, format_markdown
from medcl.evaluation.metrics import (
    BACKGROUND_VALUE,
    HD95_MEDPY,
    METRIC_NAMES,
    binary_metrics,
    case_metrics,
    check_class_values,
    check_hd95_convention,
    definitions,
    empty_mask_flags,
)
from medcl.evaluation.overlay import overlay_files, save_overlays
from medcl.files import atomic_write_text, check_writable
from medcl.ownership import OutputFolder

log = logging.getLogger(__name__)

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
AGGREGATION = ("Mean and std are over cases (population std, ddof=0). The 'overall' row first "
               "averages the foreground classes of each case, then takes mean and std over cases.")


def _match_files(case_ids: list[str],
                 files: list[Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Assign files to case ids by :func:`~medcl.data.datasets.match_case`; also return the
    unmatched."""
    matched: dict[str, list[Path]] = {}
    unmatched = []
    for path in files:
        case = match_case(case_stem(path), case_ids)
        if case is None:
            unmatched.append(path)
        else:
            matched.setdefault(case, []).append(path)
    return matched, unmatched


def pair_predictions(gt_dir: str | os.PathLike,
                     pred_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(case_id, prediction, ground truth)`` for every prediction, sorted by case id.

    Raises:
        DataError: a folder is missing or empty, a ground-truth file has no prediction, a
            prediction has no ground truth, or a case has two files. The message names the file.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    preds: dict[str, Path] = {}
    for path in volume_files(pred_dir):
        case = case_stem(path)
        if case in preds:
            raise DataError(f"{path}: a second prediction for case {case!r} ({preds[case].name})")
        preds[case] = path
    matched, unmatched = _match_files(sorted(preds), volume_files(gt_dir))
    if unmatched:
        raise DataError(f"{unmatched[0]}: ground truth without a prediction in {pred_dir} "
                        "(expected a file named after the case id, e.g. 'subject10_DE.nii.gz' "
                        "for 'subject10_DE_manual.nii.gz')")
    for case, gts in matched.items():
        if len(gts) > 1:
            raise DataError(f"{gts[1]}: case {case!r} already has the ground truth {gts[0].name}")
    for case, path in sorted(preds.items()):
        if case not in matched:
            raise DataError(f"{path}: prediction without a ground-truth file in {gt_dir}")
    return [(case, preds[case], matched[case][0]) for case in sorted(preds)]


def _classes_from_gt(gt_paths: list[Path]) -> dict[str, int]:
    values: set[int] = set()
    for path in gt_paths:
        values.update(int(v) for v in np.unique(load_volume(path, kind="label").data))
    values.discard(BACKGROUND_VALUE)
    if not values:
        raise DataError(f"{gt_paths[0].parent}: ground-truth files hold no foreground labels; "
                        "pass class_values")
    return {f"class_{v}": v for v in sorted(values)}


def _merge(labels: np.ndarray, merge_values: Mapping[int, int] | None) -> np.ndarray:
    """``labels`` with each ``merge_values`` key replaced by its value."""
    if not merge_values:
        return labels
    out = labels.copy()
    for source, target in merge_values.items():
        out[labels == source] = target
    return out


def check_label_values(volume, allowed: set[int]) -> None:
    """A label value outside the label definition would be silently left out of every metric.

    Raises:
        DataError: naming the file and the unknown values.
    """
    unknown = sorted(set(np.unique(volume.data).tolist()) - allowed)
    if unknown:
        raise DataError(f"{volume.path}: label values {unknown} are not in the label definition "
                        f"(values {sorted(allowed)}); pass --labels with every class")


def _check_options(class_values: Mapping[str, int] | None, overlay_dir, image_dir,
                   num_overlay_slices: int, hd95_convention: str) -> dict[str, int] | None:
    try:
        check_hd95_convention(hd95_convention)
    except ValueError as exc:
        raise ConfigError(f"hd95_convention: {exc}") from None
    if (overlay_dir is None) != (image_dir is None):
        raise ConfigError("overlays need both overlay_dir and image_dir")
    if (isinstance(num_overlay_slices, bool) or not isinstance(num_overlay_slices, int)
            or num_overlay_slices < 1):
        raise ConfigError(f"num_overlay_slices must be a positive integer, "
                          f"got {num_overlay_slices!r}")
    if class_values is None:
        return None
    try:
        checked = check_class_values(class_values)
    except ValueError as exc:
        raise ConfigError(f"class_values: {exc}") from None
    if all(v == BACKGROUND_VALUE for v in checked.values()):
        raise ConfigError("class_values needs at least one foreground class (value != 0)")
    return checked


def _stats(per_case: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    table = {m: np.array([row[m] for row in per_case], dtype=np.float64) for m in METRIC_NAMES}
    return ({m: float(v.mean()) for m, v in table.items()},
            {m: float(v.std()) for m, v in table.items()})


def _case_images(image_dir: Path, case_ids: list[str]) -> dict[str, Path]:
    """First image file (channel ``_0000`` if several) per case id; extra files are ignored."""
    matched, unmatched = _match_files(case_ids, volume_files(image_dir))
    if unmatched:
        log.debug("%d image files in %s match no prediction", len(unmatched), image_dir)
    return {case: paths[0] for case, paths in matched.items()}


def _check_groups(groups: Mapping[str, Sequence[int]] | None,
                  classes: Mapping[str, int]) -> dict[str, list[int]]:
    """Grouping name -> on-disk values; every value must be one of ``classes``."""
    checked = {}
    for name, values in (groups or {}).items():
        unknown = sorted(set(values) - set(classes.values()))
        if unknown or not values:
            raise ConfigError(f"grouping {name!r} names values {unknown or '[]'} that are not "
                              f"classes {dict(classes)}")
        checked[str(name)] = sorted(int(v) for v in values)
    return checked


def group_metrics(pred: np.ndarray, gt: np.ndarray, groups: Mapping[str, Sequence[int]],
                  spacing: Sequence[float], *, hd95_convention: str = HD95_MEDPY
                  ) -> dict[str, dict[str, float]]:
    """Dice, HD95 and ASSD of each grouping (the union of its classes' values) of one case.

    ``pred``, ``gt``: label volumes ``(X, Y, Z)`` of on-disk values. MyoPS: Edema = {1220, 2221}.
    """
    return {name: binary_metrics(np.isin(pred, values), np.isin(gt, values), spacing,
                                 hd95_convention=hd95_convention)
            for name, values in groups.items()}


def spec_options(spec: LabelSpec) -> dict:
    """``class_values``, ``groups`` and ``merge_values`` for :func:`evaluate_folders` from a
    dataset description (on-disk values of the ``dense`` label kind)."""
    values = dict(zip(spec.class_names, spec.label_values))
    return {"class_values": {n: values[n] for n in spec.foreground_names},
            "groups": {g: [values[n] for n in m if n != spec.class_names[0]]
                       for g, m in spec.groups.items()},
            "merge_values": {v: values[n] for v, n in spec.kind().map.items()}}


def _check_outputs(out_dir, overlay_dir, case_ids: list[str]) -> dict[str, OutputFolder]:
    """The records of the summary's and the overlays' folders (overlays inside ``out_dir`` are
    in its record), once what evaluate replaces there is found to be medcl's own."""
    records = {}
    if out_dir is not None:
        records["summary"] = OutputFolder(check_writable(out_dir), "evaluate")
        records["summary"].check([Path(out_dir) / n for n in (SUMMARY_JSON, SUMMARY_MD)],
                                 overwrite=True)
    if overlay_dir is not None:
        inside = out_dir is not None and records["summary"].holds(overlay_dir)
        records["overlays"] = (records["summary"] if inside
                               else OutputFolder(overlay_dir, "evaluate"))
        records["overlays"].check([p for c in case_ids for p in overlay_files(overlay_dir, c)],
                                  overwrite=True)
    return records


def _spacing_of(gt, pred) -> tuple[float, float, float]:
    """The ground truth's spacing, or the prediction's when the ground truth lost its geometry."""
    return pred.spacing if header_geometry(gt.header).lost else gt.spacing


def evaluate_folders(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, *,
                     class_values: Mapping[str, int] | None = None,
                     groups: Mapping[str, Sequence[int]] | None = None,
                     merge_values: Mapping[int, int] | None = None,
                     geometry: str = "auto",
                     out_dir: str | os.PathLike | None = None,
                     overlay_dir: str | os.PathLike | None = None,
                     image_dir: str | os.PathLike | None = None,
                     num_overlay_slices: int = 1, hd95_convention: str = HD95_MEDPY) -> dict:
    """Dice, HD95 and ASSD of every prediction in ``pred_dir`` against ``gt_dir``.

    Args:
        gt_dir: folder of ground-truth label maps ``(X, Y, Z)``.
        pred_dir: folder of predicted label maps, one ``{case}.nii.gz`` per case, same grid.
        class_values: class name -> on-disk label value. Default: every nonzero value found in
            the ground truth, named ``class_{value}``.
        groups: grouping name -> on-disk values scored as one mask (MyoPS: ``{"Scar": [2221],
            "Edema": [1220, 2221]}``), reported beside the classes with their mean.
        merge_values: ground-truth value -> the value it counts as (merged classes, from the
            description's ``dense`` label kind: MyoPS's RV ``{600: 0}``).
        geometry: geometry policy of :mod:`medcl.data.geometry` (prediction vs ground truth).
        out_dir: if given, ``summary.json`` and ``summary.md`` are written there (replacing
            only medcl's own, :mod:`medcl.ownership`).
        overlay_dir: if given (with ``image_dir``), overlay PNGs per case are written there.
        image_dir: folder of the images, matched to cases like the ground truth.
        num_overlay_slices: slices with the most foreground per case in the overlays; the
            slice with the worst Dice is added.
        hd95_convention: ``"medpy"`` (95th percentile of the pooled directed distances) or
            ``"monai"`` (max of the two directed 95th percentiles); recorded in the summary.

    Returns:
        ``{"cases": {case: {class: {metric: value}}}, "mean"/"std": {class: {metric: value}},
        "overall": {"mean"/"std": {metric: value}}, "mean_foreground_dice": float,
        "classes": {name: value}, "num_cases": int, "flagged": [{case, class, reason}],
        "affine_mismatch": [cases whose prediction and ground truth share shape and spacing but
        not the affine; compared voxel by voxel, with a warning],
        "hd95_convention": str, "definitions": str, "overlay_dir": str (with overlays),
        "groups": {"values", "mean", "std", "cases", "mean_dice"} (only with ``groups``), ...}``.
        Distances are in mm.

    Raises:
        DataError: files without partners, unreadable files, or a prediction (or image) whose
            shape or affine differs from its ground truth, or a file medcl did not write where
            an output goes. The message names the file.
        ConfigError: invalid options.
    """
    classes = _check_options(class_values, overlay_dir, image_dir, num_overlay_slices,
                             hd95_convention)
    pairs = pair_predictions(gt_dir, pred_dir)
    records = _check_outputs(out_dir, overlay_dir, [c for c, _, _ in pairs])  # before the metrics
    if classes is None:
        classes = _classes_from_gt([gt for _, _, gt in pairs])
    allowed = {BACKGROUND_VALUE, *classes.values()}
    images = _case_images(Path(image_dir), [c for c, _, _ in pairs]) if image_dir else {}
    foreground = [n for n, v in classes.items() if v != BACKGROUND_VALUE]
    groups = _check_groups(groups, classes)
    group_cases: dict[str, dict[str, dict[str, float]]] = {}
    notes = GeometryNotes()

    cases: dict[str, dict[str, dict[str, float]]] = {}
    flagged: list[dict[str, str]] = []
    geometry_warnings: list[str] = []
    overlays: dict[str, list[str]] = {}
    for case, pred_path, gt_path in pairs:
        gt = load_volume(gt_path, kind="label")
        pred = load_volume(pred_path, kind="label")
        gt.data = _merge(gt.data, merge_values)
        for volume in (gt, pred):
            check_label_values(volume, allowed)
        pred, agrees = align(gt, pred, mode=geometry, notes=notes)
        if not agrees:
            geometry_warnings.append(case)
        spacing = _spacing_of(gt, pred)
        cases[case] = case_metrics(pred.data, gt.data, classes, spacing, case_id=case,
                                   hd95_convention=hd95_convention)
        if groups:
            group_cases[case] = group_metrics(pred.data, gt.data, groups, spacing,
                                              hd95_convention=hd95_convention)
        flagged += [{"case": case, "class": name, "reason": reason}
                    for name, reason in empty_mask_flags(pred.data, gt.data, classes).items()]
        log.info("case %s: Dice %s", case,
                 ", ".join(f"{n} {cases[case][n]['dice']:.{DICE_DECIMALS}f}" for n in classes))
        if overlay_dir is not None:
            if case not in images:
                log.warning("case %s: no image in %s; overlay skipped", case, image_dir)
                continue
            image, _ = align(gt, load_volume(images[case], kind="image"), mode=geometry,
                             notes=notes)
            paths = save_overlays(image.data, pred.data, gt.data, overlay_dir, case, classes,
                                  num_slices=num_overlay_slices, affine=image.affine)
            records["overlays"].record(paths)
            overlays[case] = [p.name for p in paths]

    notes.warn(str(pred_dir))
    mean, std = {}, {}
    for name in classes:
        mean[name], std[name] = _stats([cases[c][name] for c in cases])
    per_case_fg = [{m: float(np.mean([cases[c][n][m] for n in foreground])) for m in METRIC_NAMES}
                   for c in cases]
    overall_mean, overall_std = _stats(per_case_fg)
    summary = {
        "gt_dir": str(gt_dir), "pred_dir": str(pred_dir),
        "classes": dict(classes), "num_cases": len(cases),
        "mean": mean, "std": std,
        "overall": {"mean": overall_mean, "std": overall_std},
        "mean_foreground_dice": overall_mean["dice"],
        "flagged": flagged, "affine_mismatch": geometry_warnings, "cases": cases,
        "hd95_convention": hd95_convention,
        "definitions": f"{definitions(hd95_convention)} {AGGREGATION}",
    }
    if groups:
        summary["groups"] = _group_summary(groups, group_cases)
    if overlays:
        summary["overlay_dir"] = str(overlay_dir)
        summary["overlays"] = overlays
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_text(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
        atomic_write_text(out_dir / SUMMARY_MD, format_markdown(summary))
        records["summary"].record([out_dir / SUMMARY_JSON, out_dir / SUMMARY_MD])
        log.info("wrote %s and %s to %s", SUMMARY_JSON, SUMMARY_MD, out_dir)
    return summary


def _group_summary(groups: dict[str, list[int]], group_cases: dict) -> dict:
    mean, std = {}, {}
    for name in groups:
        mean[name], std[name] = _stats([group_cases[c][name] for c in group_cases])
    return {"values": groups, "mean": mean, "std": std, "cases": group_cases,
            "mean_dice": float(np.mean([mean[n]["dice"] for n in groups]))}
