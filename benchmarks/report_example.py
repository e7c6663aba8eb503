"""The example HTML report of docs/: generated data, fixed predictions, `medcl evaluate --report`.

    python benchmarks/report_example.py [--out /tmp/report_example] \
        [--screenshot docs/report_screenshot.png]

Generates 6 test volumes (``medcl.data.synthetic.generate_dataset``), writes a *fixed*
prediction per case made from its ground truth by known, different errors (a shift of 0-5
voxels in X, the myocardium eroded in every other case, the RV dropped on one slice of the last
case), evaluates with overlays and the report, and, where a Chromium is installed, takes the
screenshot shown in the README. Fixed predictions, not a trained model: a one-minute training on
the 2 shared CPU cores of the development machine ran about 20 steps and predicted noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from medcl.cli import main as medcl
from medcl.data.io import case_stem, load_nifti, save_nifti
from medcl.data.synthetic import generate_dataset
from medcl.evaluation.report import find_browser, screenshot

REPO = Path(__file__).resolve().parents[1]
NUM_CASES = 6
MYO, RV = 2, 1


def fixed_prediction(labels: np.ndarray, index: int) -> np.ndarray:
    """The ground truth with errors that grow with ``index`` (module docstring)."""
    pred = ndimage.shift(labels, (index, 0, 0), order=0, mode="constant")
    if index % 2:
        myo = pred == MYO
        pred[myo & ~ndimage.binary_erosion(myo, iterations=1)] = 0
    if index == NUM_CASES - 1:
        z = int(np.argmax((labels == RV).sum(axis=(0, 1))))
        pred[:, :, z][pred[:, :, z] == RV] = 0
    return pred


def run(out: Path, shot: Path | None) -> None:
    data = generate_dataset(out / "data", num_train=1, num_val=1, num_test=NUM_CASES, seed=7,
                            overwrite=True)
    preds = out / "pred"
    for i, path in enumerate(sorted((data / "TestSet" / "labels").iterdir())):
        gt = load_nifti(path, kind="label")
        case = case_stem(path).removesuffix("_manual")
        save_nifti(preds / f"{case}.nii.gz", fixed_prediction(gt.data, i), gt, dtype=np.uint8)
    code = medcl(["evaluate", str(data / "TestSet" / "labels"), str(preds), "-o", str(out / "eval"),
                  "--labels", str(data / "dataset.json"), "--images",
                  str(data / "TestSet" / "images"), "--report"])
    if code:
        sys.exit(code)
    if shot is not None and find_browser() is None:
        print("no chromium: screenshot skipped", file=sys.stderr)
    elif shot is not None:
        print(f"screenshot: {screenshot(out / 'eval' / 'report.html', shot)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/report_example", help="work folder")
    parser.add_argument("--screenshot", help="PNG to write (e.g. docs/report_screenshot.png)")
    args = parser.parse_args()
    run(Path(args.out), Path(args.screenshot).resolve() if args.screenshot else None)
