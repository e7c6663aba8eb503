"""What a SAM-family run scores when prediction feeds it the whole slice, the centre window of
its training crops, or smaller slices padded to it (``--window full`` / ``center`` / ``pad``,
docs/sam.md), on the same checkpoint: plain argmax (no post-processing), validation and, where
the dataset has test labels, test.

    python benchmarks/sam_window.py runs/RUN [runs/RUN2 ...] --splits val test
    python benchmarks/sam_window.py runs/myops_RUN --data $MEDCL_DATA/MyoPS2020 \\
        --labels examples/myops.json --splits val

Writes ``benchmarks/results/sam_window_{run}.json`` per run: per split and mode, the mean Dice
and per-class Dice / HD95 / ASSD (and the groupings' where the description declares some), the
seconds it took; the machine with its CPU flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from mscmr import git_commit
from myops import validation_report

from medcl.inference.predictor import Predictor
from medcl.runtime.cpu import describe

REPO = Path(__file__).resolve().parents[1]
MODES = ("full", "center", "pad")


def score(run_dir: Path, data: Path, labels: Path, splits: list[str], modes: list[str],
          device: str) -> dict:
    """``{split: {mode: summary fields}}`` of ``run_dir``'s best checkpoint."""
    out: dict = {}
    for split in splits:
        for mode in modes:
            predictor = Predictor.from_run(run_dir, device=device, postprocessing="none",
                                           window=mode)
            started = time.monotonic()
            summary = validation_report(run_dir, data, predictor, f"window_{mode}_{split}",
                                        split=split, description=labels)
            groups = summary.get("groups") or {}  # the description's (MyoPS: Scar, Edema)
            out.setdefault(split, {})[mode] = {
                "mean_foreground_dice": summary["mean_foreground_dice"],
                "mean": summary["mean"],
                "groups": groups.get("mean"), "groups_mean_dice": groups.get("mean_dice"),
                "seconds": round(time.monotonic() - started, 1), "commit": git_commit()}
            logging.info("%s %s %s: mean Dice %.4f, groupings %s", run_dir.name, split, mode,
                         summary["mean_foreground_dice"],
                         out[split][mode]["groups_mean_dice"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders of SAM-family runs")
    parser.add_argument("--data", default=str(Path(os.environ.get(
        "MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"))
    parser.add_argument("--labels", default=str(REPO / "examples" / "mscmr.json"))
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="the modes to score (added to an existing record of the run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    for run in map(Path, args.runs):
        out = Path(args.results) / f"sam_window_{run.name}.json"
        record = json.loads(out.read_text()) if out.is_file() else {}
        record.update({"command": " ".join(["python"] + sys.argv), "commit": git_commit(),
                       "torch": torch.__version__, "threads": args.threads,
                       "machine": {**describe(), "cores": os.cpu_count()}, "run": run.name,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        scores = score(run, Path(args.data), Path(args.labels), args.splits, args.modes,
                       args.device)
        for split, modes in scores.items():
            record.setdefault(split, {}).update(modes)
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps({s: {m: v["mean_foreground_dice"] for m, v in modes.items()}
                          for s, modes in record.items() if s in args.splits}))


if __name__ == "__main__":
    main()
