"""Mean and standard deviation over the seeds of one benchmark row.

    python benchmarks/seeds.py mscmr_few5_recommended_30min   # + ..._seed43_30min, ...

Reads ``benchmarks/results/{row}.json`` and every seed variant of it (the benchmarks put
``_seed<N>`` before the budget: ``mscmr_few5_recommended_seed43_30min.json``), and prints (and with
``--out``, writes as JSON) the test Dice per class, the mean foreground Dice, HD95 and the best
validation Dice as mean +- std (population std, ddof=0) with the number of seeds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


SEED = re.compile(r"_seed\d+(?=_|$)")


def row_name(result_name: str) -> str:
    """The row a result belongs to: its name without the ``_seed<N>`` word."""
    return SEED.sub("", result_name)


def seed_files(row: str, results: Path = RESULTS) -> list[Path]:
    """Every result file of ``row`` (the default seed's and the ``_seed<N>`` ones), sorted."""
    return sorted(p for p in results.glob("*.json") if row_name(p.stem) == row)


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}


def aggregate(records: list[dict]) -> dict:
    classes = [c for c in records[0]["test_mean"] if c not in ("background",)]
    out = {"seeds": [r["config"]["seed"] for r in records],
           "test_mean_foreground_dice": mean_std([r["test_mean_foreground_dice"]
                                                  for r in records]),
           "best_val_mean_dice": mean_std([r["best_val_mean_dice"] for r in records]),
           "steps": mean_std([r["steps"] for r in records])}
    if all("test_raw_mean_foreground_dice" in r for r in records):  # before post-processing
        out["test_raw_mean_foreground_dice"] = mean_std([r["test_raw_mean_foreground_dice"]
                                                         for r in records])
    for metric in ("dice", "hd95"):
        out[f"test_{metric}"] = {c: mean_std([r["test_mean"][c][metric] for r in records])
                                 for c in classes if metric in records[0]["test_mean"][c]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", help="result name without _seed<N> and .json")
    parser.add_argument("--out", help="write the aggregate JSON here")
    args = parser.parse_args()
    files = seed_files(args.row)
    if not files:
        raise SystemExit(f"no results for {args.row} in {RESULTS}")
    result = {"row": args.row, "files": [p.name for p in files],
              **aggregate([json.loads(p.read_text()) for p in files])}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
