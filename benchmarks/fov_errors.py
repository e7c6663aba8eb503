"""Where a run's false positives lie: in the zero filling outside the acquired field of view, or
inside it. Uses the 5 MSCMR *validation* volumes (the labels model selection may use).

    python benchmarks/fov_errors.py RUN_DIR [--checkpoint best]

Prints, for the checkpoint, the validation Dice per class as predicted and with every voxel
outside the field of view (``medcl.preprocessing.field_of_view``) set to background, and the
foreground false-positive voxels inside and outside the field of view. Writes
``benchmarks/results/fov_errors_<run name>_<checkpoint>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"


def dice(pred: np.ndarray, ref: np.ndarray, k: int) -> float:
    denom = (pred == k).sum() + (ref == k).sum()
    return float(2 * ((pred == k) & (ref == k)).sum() / denom) if denom else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from medcl.data.io import load_image, load_nifti
    from medcl.data.preprocessing import field_of_view
    from medcl.inference.predictor import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_run(args.run_dir, checkpoint=args.checkpoint, device="cpu")
    classes = predictor.spec.class_names
    val = DATA / "val"
    plain, masked = [], []
    fp_outside = fp_inside = 0
    for image_path in sorted((val / "images").iterdir()):
        volume = load_image([image_path])
        label_path = val / "labels" / image_path.name.replace("_DE.", "_DE_manual.")
        ref = load_nifti(label_path, kind="label").data
        pred = predictor.segment(predictor.predict_volume(volume))
        inside = field_of_view(volume.data)
        false_fg = (ref == 0) & (pred > 0)
        fp_outside += int((false_fg & ~inside).sum())
        fp_inside += int((false_fg & inside).sum())
        plain.append([dice(pred, ref, k) for k in range(1, len(classes))])
        pred[~inside] = 0
        masked.append([dice(pred, ref, k) for k in range(1, len(classes))])
    record = {"command": " ".join(["python"] + sys.argv), "run": args.run_dir,
              "checkpoint": args.checkpoint, "classes": list(classes[1:]),
              "val_dice": np.mean(plain, 0).round(4).tolist(),
              "val_mean_dice": round(float(np.mean(plain)), 4),
              "val_dice_fov_masked": np.mean(masked, 0).round(4).tolist(),
              "val_mean_dice_fov_masked": round(float(np.mean(masked)), 4),
              "false_positive_voxels_outside_fov": fp_outside,
              "false_positive_voxels_inside_fov": fp_inside}
    out = (REPO / "benchmarks" / "results"
           / f"fov_errors_{Path(args.run_dir).name}_{args.checkpoint}.json")
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
