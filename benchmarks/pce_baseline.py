"""pCE baseline on MSCMRseg: train, select on val, evaluate on the test set.

Runs one or more settings (all 25 scribbled volumes; the 5-volume few-scribble setting) with the
same wall-clock budget each, then writes ``benchmarks/results/pce_baseline.json``.

    python benchmarks/pce_baseline.py --minutes 25 --settings all25 few5

The data folder comes from ``$MEDCL_DATA`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from medcl.config import TrainConfig
from medcl.evaluation import evaluate_folders
from medcl.inference import Predictor, predict_path
from medcl.labels import LabelSpec
from medcl.training import train

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"all25": None, "few5": 5}


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def throughput(run_dir: Path) -> float:
    rates = [r["slices_per_s"] for r in map(json.loads, (run_dir / "metrics.jsonl").open())
             if r["event"] == "step"]
    return statistics.median(rates)


def run_setting(name: str, args: argparse.Namespace, data: Path) -> dict:
    run_dir = Path(args.out) / name
    cfg = TrainConfig(data=str(data), labels=str(REPO / "examples" / "mscmr.json"),
                      num_scribbled=SETTINGS[name], target_spacing=args.target_spacing,
                      max_minutes=args.minutes, iterations=1_000_000, val_interval=200,
                      num_threads=args.threads, seed=args.seed, device=args.device)
    start = time.monotonic()
    result = train(cfg, run_dir)
    train_wall = time.monotonic() - start
    predictor = Predictor.from_run(run_dir, device=args.device)
    t0 = time.monotonic()
    predict_path(data / "TestSet" / "images", run_dir / "test_pred", predictor, overwrite=True)
    predict_wall = time.monotonic() - t0
    spec = LabelSpec.from_file(REPO / "examples" / "mscmr.json")
    values = dict(zip(spec.foreground_names, spec.label_values[1:]))
    summary = evaluate_folders(data / "TestSet" / "labels", run_dir / "test_pred",
                               class_values=values, out_dir=run_dir / "test_eval")
    return {"setting": name, "num_scribbled": SETTINGS[name] or 25, "config": cfg.to_dict(),
            "steps": result["step"], "train_wall_s": round(train_wall, 1),
            "best_val_mean_dice": result["best"], "best_step": result["best_step"],
            "train_slices_per_s_median": round(throughput(run_dir), 2),
            "test_predict_wall_s": round(predict_wall, 1),
            "test_mean": summary["mean"], "test_std": summary["std"],
            "test_mean_foreground_dice": summary["mean_foreground_dice"],
            "val_curve": [(r["elapsed"] / 60, r["mean_dice"])
                          for r in map(json.loads, (run_dir / "metrics.jsonl").open())
                          if r["event"] == "val"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default=str(REPO / "runs" / "pce_baseline"))
    parser.add_argument("--target-spacing", type=float, default=1.36719)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "pce_baseline.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"
    record = {"command": " ".join([Path(sys.executable).name] + sys.argv), "commit": commit(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "started": time.ctime(),
              "runs": []}
    for name in args.settings:
        record["runs"].append(run_setting(name, args, data))
        Path(args.results).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps([{k: r[k] for k in ("setting", "steps", "test_mean_foreground_dice")}
                      for r in record["runs"]], indent=1))


if __name__ == "__main__":
    main()
