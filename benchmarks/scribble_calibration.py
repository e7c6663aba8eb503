"""Calibrate the scribble simulator (``medcl.data.scribble``) against real scribbles.

    PYTHONPATH=src python benchmarks/scribble_calibration.py            # writes docs/scribbles.md

MyoPS 2020: on the 20 training cases whose scribble files are real (101, 106, 111, 116 and 121
hold dense copies), per class, real scribbles vs scribbles simulated from the same dense labels.
MSCMR: the distribution of the real training scribbles vs that of scribbles simulated from the
val + test dense labels (no dense label of a training case exists in the release).
The data folder is ``$MEDCL_DATA`` (default ``../shared/data``). ``--options JSON`` overrides
:class:`ScribbleOptions` fields (for tuning); ``--out -`` prints the tables instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medcl.data.scribble import ScribbleOptions, scribble_volume
from medcl.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data"))

# MyoPS value codes (dataset README): dense and scribble files use different codes.
MYOPS_DENSE = {0: 0, 600: 0, 200: 1, 500: 2, 1220: 3, 2221: 4}  # RV lies under background strokes
MYOPS_SCRIBBLE = {3000: 0, 200: 1, 500: 2, 499: 2, 1220: 3, 2221: 4}  # 0 = unlabelled
MYOPS_RV = 600
MYOPS_CLASSES = ("background", "myo", "LV", "edema", "scar")
MYOPS_DENSE_COPIES = (101, 106, 111, 116, 121)
MYOPS_CASES = tuple(c for c in range(101, 126) if c not in MYOPS_DENSE_COPIES)
IGNORE = 99
# MSCMR: 0 background, 1 RV, 2 Myo, 3 LV, 4 unlabelled (examples/mscmr.json).
MSCMR_CLASSES = ("background", "RV", "myo", "LV")
MSCMR_IGNORE = 4
PERCENT = 100.0
NEAR_MM = 10.0             # background strokes nearer the foreground than this count as "near"
CENTRE_WINDOW = 3          # a stroke's centre line: local maxima of its depth in 3x3 pixels
# The MSCMR annotators drew wider, closed strokes and a wide background loop far from the
# heart: the second MSCMR column simulates that style by overriding the (MyoPS-calibrated)
# defaults.
MSCMR_STYLE = {"stroke_width_mm": 2.0, "extent": 1.0, "background_width_mm": 3.5,
               "background_distance_mm": [2.0, 30.0]}
SET_NAMES = ("defaults", "MSCMR style")


def _plane_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Per slice, distance (mm) from each voxel of ``mask`` to the nearest voxel outside it."""
    out = np.zeros(mask.shape)
    for z in range(mask.shape[2]):
        if mask[..., z].any():
            padded = np.pad(mask[..., z], 1)
            out[..., z] = ndimage.distance_transform_edt(padded, sampling=spacing[:2])[1:-1, 1:-1]
    return out


def _stroke_shape(stroke: np.ndarray, spacing) -> tuple[float, float]:
    """Width (mm) of one slice's strokes (twice the depth of their centre line, less a voxel)
    and length (mm) = area / width."""
    depth = _plane_distance(stroke[..., None], spacing)[..., 0]
    centre = stroke & (depth >= ndimage.maximum_filter(depth, size=CENTRE_WINDOW))
    width = float(np.mean(2 * depth[centre] - spacing[0]))
    return width, float(stroke.sum()) * spacing[0] * spacing[1] / width


def _summary(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def stroke_metrics(scribble: np.ndarray, spacing, cls: int) -> dict:
    """Label-free metrics of one class's strokes: per stroked slice, area, width and length."""
    areas, widths, lengths = [], [], []
    for z in range(scribble.shape[2]):
        stroke = scribble[..., z] == cls
        if stroke.any():
            width, length = _stroke_shape(stroke, spacing)
            areas.append(float(stroke.sum()) * spacing[0] * spacing[1])
            widths.append(width)
            lengths.append(length)
    return {"area_mm2_per_slice": _summary(areas), "width_mm": _summary(widths),
            "length_mm_per_slice": _summary(lengths),
            "slices_stroked_pct": PERCENT * len(areas) / scribble.shape[2]}


def dense_metrics(scribble: np.ndarray, dense: np.ndarray, spacing, cls: int) -> dict:
    """Metrics of one class's strokes against the dense label: coverage, slices, depth."""
    structure, stroke = dense == cls, scribble == cls
    present = structure.any(axis=(0, 1))
    out = stroke_metrics(np.where(present[None, None], scribble, IGNORE), spacing, cls)
    out["slices_stroked_pct"] = PERCENT * float((stroke.any(axis=(0, 1)) & present).sum()) / max(
        int(present.sum()), 1)
    out["coverage_pct"] = PERCENT * float((stroke & structure).sum()) / max(int(structure.sum()), 1)
    if cls == 0:
        foreground = dense != 0
        away = _plane_distance(~foreground, spacing)[stroke]
        out["distance_from_foreground_mm"] = float(np.median(away)) if away.size else None
        out["within_10mm_pct"] = PERCENT * float((away <= NEAR_MM).mean()) if away.size else None
        out["on_foreground_pct"] = PERCENT * float(foreground[stroke].mean()) if away.size else None
    else:
        depth = _plane_distance(structure, spacing)[stroke & structure]
        out["distance_to_boundary_mm"] = float(np.median(depth)) if depth.size else None
    return out


def _round(x: np.ndarray, table: dict[int, int], unlabelled: int) -> np.ndarray:
    values = np.rint(x).astype(np.int64)
    out = np.full(values.shape, unlabelled, dtype=np.int64)
    for value, index in table.items():
        out[values == value] = index
    return out


def load_myops(case: int) -> tuple[np.ndarray, np.ndarray, tuple, np.ndarray]:
    """Dense indices (RV as background), real scribble indices, spacing, RV mask of one case."""
    root = DATA / "MyoPS2020"
    dense_img = nib.load(str(root / "train25_myops_gd" / f"myops_training_{case}_gd.nii.gz"))
    dense_raw = np.rint(np.asanyarray(dense_img.dataobj)).astype(np.int64)
    real_raw = np.asanyarray(nib.load(str(root / "scribbles" / f"myops_training_{case}_gd.nii.gz"))
                             .dataobj)
    spacing = tuple(float(s) for s in dense_img.header.get_zooms()[:3])  # scribble files lost it
    dense = _round(dense_raw, MYOPS_DENSE, IGNORE)
    return dense, _round(real_raw, {**MYOPS_SCRIBBLE, 0: IGNORE}, IGNORE), spacing, \
        dense_raw == MYOPS_RV


def _aggregate(per_case: list[dict]) -> dict:
    keys = per_case[0].keys()
    return {k: [c[k] for c in per_case if c[k] is not None] for k in keys}


def myops_comparison(options: ScribbleOptions) -> dict:
    real, sim, rv_share = {c: [] for c in MYOPS_CLASSES}, {c: [] for c in MYOPS_CLASSES}, []
    for case in MYOPS_CASES:
        dense, scribble, spacing, rv = load_myops(case)
        simulated = scribble_volume(dense, spacing, num_classes=len(MYOPS_CLASSES),
                                    ignore_index=IGNORE, options=options, seed=case)
        rv_share.append((PERCENT * float(rv[scribble == 0].mean()),
                         PERCENT * float(rv[simulated == 0].mean())))
        for index, name in enumerate(MYOPS_CLASSES):
            real[name].append(dense_metrics(scribble, dense, spacing, index))
            sim[name].append(dense_metrics(simulated, dense, spacing, index))
    return {"real": {k: _aggregate(v) for k, v in real.items()},
            "simulated": {k: _aggregate(v) for k, v in sim.items()}}, rv_share


def _mscmr_cases(split: str) -> list[Path]:
    return sorted((DATA / "MSCMR_dataset" / split / "labels").glob("*.nii.gz"))


def _mscmr_metrics(scribble: np.ndarray, spacing, index: int) -> dict:
    out = stroke_metrics(scribble, spacing, index)
    if index == 0:
        foreground = (scribble != 0) & (scribble != MSCMR_IGNORE)
        away = _plane_distance(~foreground, spacing)[scribble == 0]
        out["distance_from_foreground_strokes_mm"] = float(np.median(away)) if away.size else None
    return out


def mscmr_comparison(option_sets: list[ScribbleOptions]) -> dict:
    """Real training scribbles, and scribbles simulated from val + test with each option set."""
    real = {c: [] for c in MSCMR_CLASSES}
    for path in _mscmr_cases("train"):
        img = nib.load(str(path))
        scribble = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
        for index, name in enumerate(MSCMR_CLASSES):
            real[name].append(_mscmr_metrics(scribble, img.header.get_zooms(), index))
    out = {"real": {k: _aggregate(v) for k, v in real.items()}}
    for number, options in enumerate(option_sets):
        sim = {c: [] for c in MSCMR_CLASSES}
        for seed, path in enumerate(_mscmr_cases("val") + _mscmr_cases("TestSet")):
            img = nib.load(str(path))
            dense = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
            spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
            simulated = scribble_volume(dense, spacing, num_classes=len(MSCMR_CLASSES),
                                        ignore_index=MSCMR_IGNORE, options=options, seed=seed)
            for index, name in enumerate(MSCMR_CLASSES):
                sim[name].append(_mscmr_metrics(simulated, spacing, index))
        out[f"simulated ({SET_NAMES[number]})"] = {k: _aggregate(v) for k, v in sim.items()}
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def table(result: dict, classes: tuple[str, ...]) -> str:
    """Markdown table: one row per class and metric, one column per source."""
    sources = list(result)
    lines = ["| class | metric | " + " | ".join(sources) + " |",
             "|---|---|" + "---|" * len(sources)]
    for name in classes:
        for metric in result["real"][name]:
            cells = " | ".join(_cell(result[source][name][metric]) for source in sources)
            lines.append(f"| {name} | {metric} | {cells} |")
    return "\n".join(lines)

START, END = "<!-- calibration:start -->", "<!-- calibration:end -->"
COMMAND = "PYTHONPATH=src python benchmarks/scribble_calibration.py"


def _options_text(options: ScribbleOptions) -> str:
    """The fields that differ from the defaults, as JSON (``{}``: the defaults)."""
    default = ScribbleOptions()
    return json.dumps({k: v for k, v in vars(options).items() if getattr(default, k) != v})


def report(options: ScribbleOptions, myops: tuple[dict, list], mscmr: dict | None,
           mscmr_style: ScribbleOptions) -> str:
    result, rv = myops
    parts = [START, f"Generated by `{COMMAND}`; simulator options: `{_options_text(options)}` "
             "over the defaults.", "",
             f"#### MyoPS 2020: {len(MYOPS_CASES)} training cases, real vs simulated "
             "(mean ± sd over cases)", "", table(result, MYOPS_CLASSES), "",
             f"Background stroke voxels on the RV: real {_cell([r for r, _ in rv])} %, "
             f"simulated {_cell([s for _, s in rv])} %.", ""]
    if mscmr is not None:
        parts += [f"#### MSCMR: {len(mscmr['real']['background']['slices_stroked_pct'])} real "
                  "training scribble volumes vs simulated from the 20 val + test dense labels "
                  "(mean ± sd over volumes)", "",
                  f"`{SET_NAMES[1]}` = `{_options_text(mscmr_style)}` over the defaults.", "",
                  table(mscmr, MSCMR_CLASSES), ""]
    return "\n".join(parts + [END])


def write_doc(path: Path, body: str) -> None:
    """Replace the generated part of ``path`` (between the markers), keeping the prose."""
    text = path.read_text() if path.exists() else f"# Scribbles\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        sys.exit(f"{path}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    atomic_write_text(path, head + body + rest.split(END, 1)[1])


def _options(text: str | None) -> ScribbleOptions:
    overrides = json.loads(text) if text else {}
    return ScribbleOptions(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in overrides.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", help="JSON object of ScribbleOptions overrides")
    parser.add_argument("--mscmr-options", default=json.dumps(MSCMR_STYLE),
                        help="overrides for the second MSCMR column (default: %(default)s)")
    parser.add_argument("--out", default=str(REPO / "docs" / "scribbles.md"),
                        help="document to update, or - to print")
    parser.add_argument("--skip-mscmr", action="store_true")
    args = parser.parse_args()
    options, mscmr_style = _options(args.options), _options(args.mscmr_options)
    mscmr = None if args.skip_mscmr else mscmr_comparison([options, mscmr_style])
    body = report(options, myops_comparison(options), mscmr, mscmr_style)
    if args.out == "-":
        print(body)
    else:
        write_doc(Path(args.out), body)


if __name__ == "__main__":
    main()
