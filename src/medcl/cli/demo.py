"""``medcl demo``: generate data, train, predict and evaluate in minutes."""

from __future__ import annotations

import argparse

from medcl.cli.options import bounded
from medcl.cli.progress import ProgressBar


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate data, train, predict and evaluate in minutes")
    p.add_argument("--out", default="demo_run", help="output folder (default: demo_run)")
    p.add_argument("--data", help="run on this dataset instead of generated data")
    p.add_argument("--labels", help="label definition JSON for --data")
    p.add_argument("--minutes", type=bounded(float, 0, strict=True), default=2.0,
                   help="training budget (default: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo's outputs in --out: the files medcl wrote "
                   "(never --data, nor files medcl did not write)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.demo import run_demo

    bar = ProgressBar()
    try:
        summary = run_demo(args.out, data=args.data, labels=args.labels, minutes=args.minutes,
                           device=args.device, overwrite=args.overwrite, callback=bar)
    finally:
        bar.close()
    from medcl.evaluation.markdown import format_markdown

    print(format_markdown(summary))
    print(f"demo outputs in {args.out}")
    return 0
