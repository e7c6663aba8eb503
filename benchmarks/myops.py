"""MyoPS 2020 benchmark (scar and edema on multi-sequence cardiac MR): train one row for a
wall-clock budget, select the checkpoint on the 5 validation cases, report validation Scar /
Edema / mean Dice (and HD95) raw and with the post-processing chosen on the same validation
cases (optimistic there), and write post-processed predictions for the 20 test images.

    python benchmarks/myops.py --row pce --minutes 30
    python benchmarks/myops.py --row medcl --minutes 30
    python benchmarks/myops.py --row full --minutes 30          # dense labels, upper bound
    python benchmarks/myops.py --row pce --minutes 30 --evaluate-only   # a finished run again

The test labels are not given: the test predictions (``RUN/test_predictions/``) are evaluated
separately. Every reported number is a validation number. The data folder is
``$MEDCL_DATA/MyoPS2020`` (default ``../shared/data``), read through ``examples/myops.json``.
Writes ``benchmarks/results/myops_{row}_{minutes}min.json`` and leaves the run in ``runs/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from mscmr import UNLIMITED_STEPS, finished_run, git_commit, read_metrics, train_timed

from medcl.data.datasets import discover
from medcl.evaluation.evaluate import evaluate_folders, spec_options
from medcl.inference.postprocessing import POSTPROCESSING_FILE
from medcl.inference.predictor import Predictor, predict_case, predict_path
from medcl.runtime.cpu import describe
from medcl.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = REPO / "examples" / "myops.json"
FEW_SCRIBBLED = 5
#: the rows of the benchmark: TrainConfig options beside the shared ones
ROWS = {
    "pce": {"method": "pce", "num_scribbled": FEW_SCRIBBLED},
    "pce_dice": {"method": "pce", "dice_weight": 1.0, "num_scribbled": FEW_SCRIBBLED},
    "medcl": {"method": "medcl", "num_scribbled": FEW_SCRIBBLED},
    # the recipe chosen on MSCMR validation (issue 17), run unchanged
    "recommended": {"method": "recommended", "num_scribbled": FEW_SCRIBBLED},
    "full": {"method": "pce", "supervision": "dense", "train_labels": "dense_labels",
             "dice_weight": 1.0},
}


def validation_report(run_dir: Path, data: Path, predictor: Predictor, folder: str, *,
                      split: str = "val", description: Path = DESCRIPTION) -> dict:
    """Predict the ``split`` cases (default: validation) with ``predictor`` into
    ``run_dir/folder`` and score them with the description's groupings."""
    dataset = discover(data, description)
    cases = dataset.cases(split)
    for case in cases:
        predict_case(predictor, case.image_paths, run_dir / folder / f"{case.case_id}.nii.gz")
    gt_dir = run_dir / f"{split}_gt"  # links to the dense label files: evaluate wants a folder
    gt_dir.mkdir(exist_ok=True)
    for case in cases:
        link = gt_dir / case.label_path.name
        if not link.is_symlink():
            link.symlink_to(case.label_path)
    return evaluate_folders(gt_dir, run_dir / folder, **spec_options(dataset.spec),
                            out_dir=run_dir / f"{folder}_eval")


def raw_and_postprocessed(run_dir: Path, data: Path, predictor: Predictor,
                          device: str) -> tuple[dict, dict]:
    """Validation summaries of the run's best checkpoint: plain argmax, and ``predictor``'s
    (the post-processing the run chose on these same cases: optimistic on them)."""
    plain = Predictor.from_run(run_dir, device=device, postprocessing="none")
    return (validation_report(run_dir, data, plain, "val_predictions_raw"),
            validation_report(run_dir, data, predictor, "val_predictions"))


def grouped(summary: dict, prefix: str) -> dict:
    """Scar / Edema / mean Dice and HD95 of an evaluation summary, keys prefixed."""
    groups = summary["groups"]
    return {f"{prefix}scar_dice": groups["mean"]["Scar"]["dice"],
            f"{prefix}edema_dice": groups["mean"]["Edema"]["dice"],
            f"{prefix}mean_dice": groups["mean_dice"],
            f"{prefix}hd95_mm": {g: groups["mean"][g]["hd95"] for g in groups["values"]}}


def run(args: argparse.Namespace, data: Path) -> dict:
    name = f"myops_{args.row}{'_' + args.tag if args.tag else ''}_{args.minutes:g}min"
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.out) / name
    if args.evaluate_only:
        result, train_wall = finished_run(run_dir, args.device)
    else:
        options = {"iterations": UNLIMITED_STEPS, **ROWS[args.row],
                   **(json.loads(args.options) if args.options else {})}
        cfg = TrainConfig(data=str(data), labels=str(DESCRIPTION),
                          target_spacing=args.target_spacing, max_minutes=args.minutes,
                          val_interval=args.val_interval, num_threads=args.threads,
                          seed=args.seed, device=args.device, **options)
        result, train_wall = train_timed(cfg, run_dir)
    predictor = Predictor.from_run(run_dir, device=args.device)
    raw, summary = raw_and_postprocessed(run_dir, data, predictor, args.device)
    started = time.monotonic()
    written = predict_path(data / "test20", run_dir / "test_predictions", predictor,
                           overwrite=True)
    predict_wall = time.monotonic() - started
    metrics = read_metrics(run_dir)
    steps = [r for r in metrics if r["event"] == "step"]
    pp_file = run_dir / POSTPROCESSING_FILE
    return {"name": name, "row": args.row, "budget_minutes": args.minutes,
            "config": json.loads((run_dir / "config.json").read_text()), "steps": result["step"],
            "train_wall_s": round(train_wall, 1),
            "best_step": result["best_step"], "best_val_selection_dice": result["best"],
            # the post-processing chosen on these validation cases (optimistic on them)
            "postprocessing": json.loads(pp_file.read_text()) if pp_file.is_file() else None,
            **grouped(raw, "val_raw_"), **grouped(summary, "val_"),
            "val_class_dice": {n: m["dice"] for n, m in summary["mean"].items()},
            "val_cases": {c: {g: r["dice"] for g, r in res.items()}
                          for c, res in summary["groups"]["cases"].items()},
            "train_slices_per_s_median": round(statistics.median(r["slices_per_s"] for r in steps),
                                               2) if steps else None,
            "test_predictions": str(run_dir / "test_predictions"),
            "test_predictions_written": len(written),
            "test_predict_s_per_volume": round(predict_wall / max(1, len(written)), 2),
            # the selection score (mean Dice of the classes) at each validation
            "val_curve_minutes_dice": [[round(r["elapsed"] / 60, 2), r["mean_dice"]]
                                       for r in metrics if r["event"] == "val"],
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", choices=list(ROWS), default="pce")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--options", help="JSON object of extra TrainConfig options (the best "
                        "MedCL configuration found on validation is a --row medcl --options row)")
    parser.add_argument("--tag", help="extra word in the result name, for a variant of a row")
    parser.add_argument("--out", default=str(REPO / "runs"))
    parser.add_argument("--run-dir", help="run folder (default: OUT/<name>)")
    parser.add_argument("--target-spacing", type=float, default=None,
                        help="in-plane mm (default: median of the training images, ~0.73)")
    parser.add_argument("--val-interval", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--evaluate-only", action="store_true",
                        help="a finished run: choose its post-processing if it has none, "
                        "evaluate again and rewrite its result (keeping the training command)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MyoPS2020"
    command = {"command": " ".join(["python"] + sys.argv), "commit": git_commit(),
               "torch": torch.__version__, "threads": args.threads,
               "machine": {**describe(), "cores": os.cpu_count()},
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    result = run(args, data)
    out = Path(args.results) / f"{result['name']}.json"
    if args.evaluate_only:  # the training's record stays; this evaluation is added to it
        before = json.loads(out.read_text()) if out.is_file() else {}
        command = {**{k: before[k] for k in command if k in before},
                   "evaluated": {**{k: command[k] for k in ("command", "commit", "started")},
                                 "peak_rss_gib": result["peak_rss_gib"]}}
        if "peak_rss_gib" in before:  # the training's peak, not this evaluation's
            result["peak_rss_gib"] = before["peak_rss_gib"]
    record = {**command, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("name", "steps", "val_raw_mean_dice", "val_scar_dice",
                                             "val_edema_dice", "val_mean_dice",
                                             "test_predictions_written")}))


if __name__ == "__main__":
    main()
