"""Run several ``mscmr.py`` rows at once on one GPU, each its own process, under one deadline.

    python benchmarks/gpu_rows.py benchmarks/gpu_rows.json --minutes 4 --deadline 510 \
        --results $OUT/results --logs $OUT/logs

A lent GPU comes for minutes, not hours, so the rows of one comparison share it: each row is a
``benchmarks/mscmr.py --device cuda`` process with its own CPU threads and the same training
budget, started together (so they compete for the GPU alike). A process still running at the
deadline is killed and reported as such; the others' result files are kept. The rows file is a
JSON list of objects with ``method``, ``seed``, ``tag``, ``threads`` and ``options`` (the
``--options`` of mscmr.py); a top-level ``{"shared": {...}, "rows": [...]}`` also works, where
each row's ``options`` may name an entry of ``shared`` by ``"use"``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLL_SECONDS = 2.0


def expand(rows_file: Path) -> list[dict]:
    """The rows of ``rows_file``, each with its ``options`` resolved (``use`` merged in)."""
    spec = json.loads(rows_file.read_text())
    shared = spec.get("shared", {}) if isinstance(spec, dict) else {}
    rows = spec["rows"] if isinstance(spec, dict) else spec
    out = []
    for row in rows:
        options = dict(row.get("options", {}))
        for name in options.pop("use", []):
            options = {**shared[name], **options}
        out.append({**row, "options": options})
    return out


def command(row: dict, minutes: float, results: Path, runs: Path) -> list[str]:
    return [sys.executable, str(HERE / "mscmr.py"), "--method", row["method"],
            "--setting", row.get("setting", "few5"), "--minutes", f"{minutes:g}",
            "--val-interval", str(row.get("val_interval", 100)), "--threads",
            str(row.get("threads", 2)), "--seed", str(row.get("seed", 42)), "--tag", row["tag"],
            "--device", "cuda", "--results", str(results), "--out", str(runs),
            "--options", json.dumps(row["options"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path)
    parser.add_argument("--minutes", type=float, required=True, help="training budget per row")
    parser.add_argument("--deadline", type=float, required=True,
                        help="seconds after which every row still running is killed")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=HERE.parent / "runs")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="predict and evaluate the rows' finished runs (mscmr.py's flag)")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs = []
    for i, row in enumerate(expand(args.rows)):
        cmd = command(row, args.minutes, args.results, args.runs) + (
            ["--evaluate-only"] if args.evaluate_only else [])
        log = (args.logs / f"row{i}_{row['method']}_{row['tag']}_seed{row.get('seed', 42)}.log")
        procs.append((row, cmd, subprocess.Popen(cmd, stdout=log.open("w"),
                                                 stderr=subprocess.STDOUT)))
        print("started:", " ".join(cmd), flush=True)
    while any(p.poll() is None for _, _, p in procs):
        if time.monotonic() - started > args.deadline:
            for _, _, p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(POLL_SECONDS)
    summary = [{"method": row["method"], "tag": row["tag"], "seed": row.get("seed", 42),
                "returncode": p.wait(), "command": " ".join(cmd)} for row, cmd, p in procs]
    summary_file = args.logs / "gpu_rows_summary.json"
    summary_file.write_text(json.dumps({"wall_s": round(time.monotonic() - started, 1),
                                        "minutes": args.minutes, "rows": summary}, indent=1))
    print(summary_file.read_text(), flush=True)


if __name__ == "__main__":
    main()
