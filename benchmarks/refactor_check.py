"""Same seed, same losses: 20 steps of ``pce`` and of ``medcl`` on generated data.

Run before and after a refactor; the two JSON files must be equal (bit-identical on CPU)::

    python benchmarks/refactor_check.py --out before.json   # on the old commit
    python benchmarks/refactor_check.py --out after.json    # on the new commit
    cmp before.json after.json

``--machine FILE`` records the CPU (model, flags) beside, out of the compared file. The committed
reference ``results/refactor_check_before.json`` was made on the CPU in
``results/refactor_check_before.machine.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import medcl

try:  # the layout in wings (issue 16)
    from medcl import TrainConfig, train
    from medcl.data.synthetic import generate_dataset
except ImportError:  # the flat layout before it, to make the reference file
    from medcl.data.synthetic import generate_dataset
    from medcl.training.config import TrainConfig
    from medcl.training.run import train

STEPS = 20
METHODS = ("pce", "medcl")


def run(method: str, data: Path, out: Path) -> list[dict]:
    cfg = TrainConfig(data=str(data), method=method, crop_size=32, batch_size=4,
                      iterations=STEPS, val_interval=10, log_interval=1, widths=[4, 8, 16],
                      warmup_steps=2, num_threads=1, device="cpu", infer_batch_size=4, seed=7,
                      precision="fp32", channels_last=False)
    train(cfg, out)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    drop = ("elapsed", "slices_per_s", "budget")
    return [{k: v for k, v in r.items() if k not in drop} for r in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--machine", help="also write the CPU it ran on (model, flags) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_dataset(Path(tmp) / "data", num_train=4, num_val=1, num_test=1,
                                shape=(64, 64, 4), seed=3)
        result = {m: run(m, data, Path(tmp) / m) for m in METHODS}
    if args.machine:  # the comparison file stays free of it, so that cmp compares losses only
        from medcl.runtime.cpu import describe

        Path(args.machine).write_text(json.dumps(describe(), indent=1) + "\n")
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"medcl {medcl.__version__}: wrote {args.out}")


if __name__ == "__main__":
    main()
