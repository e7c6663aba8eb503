"""MSCMRseg benchmark: train one method in one setting for a wall-clock budget, select the
checkpoint on the 5 validation volumes, evaluate on the 15 test volumes.

    python benchmarks/mscmr.py --method medcl --setting few5 --minutes 30

Writes ``benchmarks/results/mscmr_{setting}_{method}_{minutes}min.json`` (commit, command, machine,
throughput, validation curves raw and post-processed, the checkpoint each selection rule keeps,
test Dice/HD95/ASSD per class) and leaves the run in ``runs/``.
The data folder is ``$MEDCL_DATA/MSCMR_dataset`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from medcl.data.labels import LabelSpec
from medcl.evaluation.evaluate import evaluate_folders
from medcl.evaluation.metrics import HD95_CONVENTIONS, HD95_MEDPY
from medcl.inference.postprocessing import POSTPROCESSING_FILE
from medcl.inference.predictor import Predictor, predict_path
from medcl.runtime.cpu import cpu_info, describe, kernel_path
from medcl.training.config import METHODS, TrainConfig
from medcl.training.postprocessing_choice import select_postprocessing
from medcl.training.run import train
from medcl.training.run_folder import SELECTION_NAME

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "examples" / "mscmr.json"
SETTINGS = {"all25": None, "few5": 5}
DEFAULT_SEED = 42
UNLIMITED_STEPS = 1_000_000  # a wall-clock budget decides when training stops
#: the commit to record where the checkout has no git history (set by whoever copied the tree)
COMMIT_ENV = "MEDCL_BENCH_COMMIT"


def git_commit(short: bool = False) -> str:
    """The commit of the checkout (abbreviated with ``short``); ``-dirty`` where tracked files
    differ from it."""
    head = subprocess.run(["git", "rev-parse"] + (["--short"] if short else []) + ["HEAD"],
                          cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:  # a copy of the tree without its history (a lent GPU machine)
        return os.environ.get(COMMIT_ENV, "unknown")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


#: the validation record's key of each selection rule's score (runs from before post-processed
#: selection hold the raw score in ``mean_dice`` and no post-processed one)
RULE_KEYS = {"raw": "mean_dice_raw", "post": "mean_dice_post"}


def val_score(record: dict, rule: str) -> float | None:
    """A validation record's score under ``rule`` (``raw`` or ``post``)."""
    return record.get(RULE_KEYS[rule], record["mean_dice"] if rule == "raw" else None)


def selections(records: list[dict]) -> dict:
    """The checkpoint each selection rule would keep: ``{rule: {"step", "score"} or None}``,
    the first validation with the highest score (as training keeps it)."""
    out = {}
    for rule in RULE_KEYS:
        scored = [(val_score(r, rule), r["step"]) for r in records
                  if r.get("event") == "val" and r["mean_dice"] is not None]
        scored = [pair for pair in scored if pair[0] is not None]
        best = max(scored, key=lambda pair: pair[0]) if scored else None
        out[rule] = best and {"step": best[1], "score": best[0]}
    return out


def selection_rule(run_dir: Path) -> str:
    """The rule that chose the run's ``best.pt``: its ``selection.json``'s, else ``raw`` (runs
    from before post-processed selection)."""
    path = run_dir / SELECTION_NAME
    return json.loads(path.read_text())["rule"] if path.is_file() else "raw"


def finished_run(run_dir: Path, device: str = "cpu") -> tuple[dict, float]:
    """A finished run's outcome (``step``, ``best``, ``best_step``) and training seconds, read
    from its ``metrics.jsonl``; its post-processing is chosen if it was trained without one."""
    records = [r for r in read_metrics(run_dir) if "step" in r]  # not the run's other events
    # (a SAM run's "embeddings" record has no step)
    vals = [r for r in records if r["event"] == "val" and r["mean_dice"] is not None]
    best = max(vals, key=lambda r: r["mean_dice"])
    if not (run_dir / POSTPROCESSING_FILE).is_file():  # trained before the choice existed
        select_postprocessing(run_dir, device=device)
    return ({"step": max(r["step"] for r in records), "best": best["mean_dice"],
             "best_step": best["step"]}, max(r["elapsed"] for r in records))


def evaluate_test(data: Path, pred_dir: Path, hd95: str = HD95_MEDPY) -> dict:
    """Evaluate the test predictions in ``pred_dir`` against ``data``'s test labels; the summary
    (also written to ``pred_dir``'s sibling ``<name>_eval``)."""
    spec = LabelSpec.from_file(LABELS)
    return evaluate_folders(data / "TestSet" / "labels", pred_dir,
                            class_values=dict(zip(spec.foreground_names, spec.label_values[1:])),
                            out_dir=pred_dir.with_name(f"{pred_dir.name}_eval"),
                            hd95_convention=hd95)


def train_timed(cfg: TrainConfig, run_dir: Path) -> tuple[dict, float]:
    """Train ``cfg`` into ``run_dir``; the outcome and the wall-clock seconds it took."""
    started = time.monotonic()
    result = train(cfg, run_dir)
    return result, time.monotonic() - started


def run(args: argparse.Namespace, data: Path) -> dict:
    model = (json.loads(args.options) if args.options else {}).get("model", "unet")
    tag = (("" if model == "unet" else f"_{model}") + (f"_{args.tag}" if args.tag else "")
           + (f"_seed{args.seed}" if args.seed != DEFAULT_SEED else ""))
    run_name = f"mscmr_{args.setting}_{args.method}{tag}_{args.minutes:g}min"
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.out) / run_name
    # another HD95 convention than the default: a result file of its own
    name = run_name + (f"_hd95{args.hd95}" if args.hd95 != HD95_MEDPY else "")
    if args.evaluate_only:  # a finished run: take its configuration and outcome from its files
        cfg = TrainConfig.from_file(run_dir / "config.json")
        result, train_wall = finished_run(run_dir, args.device)
    else:
        overrides = json.loads(args.options) if args.options else {}
        options = {"iterations": UNLIMITED_STEPS, **overrides}  # the budget decides, unless given
        cfg = TrainConfig(data=str(data), labels=str(LABELS), method=args.method,
                          num_scribbled=SETTINGS[args.setting],
                          target_spacing=args.target_spacing, max_minutes=args.minutes,
                          val_interval=args.val_interval, num_threads=args.threads,
                          seed=args.seed, device=args.device, **options)
        result, train_wall = train_timed(cfg, run_dir)
    predictor = Predictor.from_run(run_dir, device=args.device)
    started = time.monotonic()
    predict_path(data / "TestSet" / "images", run_dir / "test_pred", predictor, overwrite=True)
    predict_wall = time.monotonic() - started

    def evaluate(folder: str) -> dict:
        return evaluate_test(data, run_dir / folder, args.hd95)

    summary = evaluate("test_pred")
    raw = summary
    if not predictor.postprocessing.is_identity:  # the raw network too, for comparison
        predict_path(data / "TestSet" / "images", run_dir / "test_pred_raw",
                     Predictor.from_run(run_dir, device=args.device, postprocessing="none"),
                     overwrite=True)
        raw = evaluate("test_pred_raw")
    pp_file = run_dir / POSTPROCESSING_FILE
    records = read_metrics(run_dir)
    vals = [r for r in records if r["event"] == "val"]
    steps = [r for r in records if r["event"] == "step"]
    return {"name": name, "method": args.method, "setting": args.setting,
            "num_scribbled": SETTINGS[args.setting] or 25, "budget_minutes": args.minutes,
            "config": cfg.to_dict(), "steps": result["step"], "train_wall_s": round(train_wall, 1),
            "best_val_mean_dice": result["best"], "best_step": result["best_step"],
            # best_step is what the run's rule kept; each rule's pick beside it (rankings differ)
            "selection_rule": selection_rule(run_dir), "val_selections": selections(records),
            "train_source_slices_per_s_median": round(
                statistics.median(r["slices_per_s"] for r in steps), 2),
            "test_predict_wall_s": round(predict_wall, 1),
            "test_predict_s_per_volume": round(predict_wall / len(summary["cases"]), 2)
            if summary.get("cases") else None,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if args.device != "cpu" and torch.cuda.is_available() else None,
            "hd95_convention": summary["hd95_convention"],
            "test_mean": summary["mean"], "test_std": summary["std"],
            "test_mean_foreground_dice": summary["mean_foreground_dice"],
            # chosen on the validation cases after training; raw = without it
            "postprocessing": json.loads(pp_file.read_text()) if pp_file.is_file() else None,
            "test_raw_mean": raw["mean"], "test_raw_mean_foreground_dice":
                raw["mean_foreground_dice"],
            "val_curve_minutes_dice": [(round(r["elapsed"] / 60, 2), val_score(r, "raw"))
                                       for r in vals],
            "val_curve_minutes_dice_post": [(round(r["elapsed"] / 60, 2), val_score(r, "post"))
                                            for r in vals]}


def machine(device: str) -> str:
    """The machine in words: architecture, cores, CPU model, torch's kernel path, and the GPU
    where ``device`` is one."""
    words = (f"{platform.machine()}, {os.cpu_count()} cores, "
             f"{cpu_info().model or platform.processor() or 'cpu'}, torch kernels {kernel_path()}")
    if device != "cpu" and torch.cuda.is_available():
        words += f", GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, default="pce")
    parser.add_argument("--setting", choices=list(SETTINGS), default="few5")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--options", help="JSON object of extra TrainConfig options")
    parser.add_argument("--tag", help="extra word in the result name, for a variant of a row")
    parser.add_argument("--out", default=str(REPO / "runs"))
    parser.add_argument("--run-dir", help="run folder (default: OUT/<name>)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="predict and evaluate a finished run in --run-dir")
    parser.add_argument("--target-spacing", type=float, default=1.36719)
    parser.add_argument("--val-interval", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="another seed than the default adds '_seed<N>' to the result name")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--hd95", choices=HD95_CONVENTIONS, default=HD95_MEDPY,
                        help="HD95 convention (docs/metrics.md); a non-default one adds "
                             "'_hd95<name>' to the result name (--evaluate-only: re-score a run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"
    record = {"command": " ".join(["python"] + sys.argv), "commit": git_commit(),
              "torch": torch.__version__, "threads": args.threads,
              "machine": machine(args.device), "cpu": describe(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), **run(args, data)}
    out = Path(args.results) / f"{record['name']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("name", "steps", "best_val_mean_dice",
                                             "test_mean_foreground_dice")}))


if __name__ == "__main__":
    main()
