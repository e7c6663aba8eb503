"""``medcl train``: train from a dataset folder into a run folder (fresh or resumed)."""

from __future__ import annotations

import argparse

from medcl.cli.options import add_config_flags, config_from_args
from medcl.cli.progress import ProgressBar
from medcl.errors import MedclError
from medcl.runtime import distributed


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a segmentation network from scribbles")
    p.add_argument("--out", required=True, help="run folder (config, metrics, checkpoints)")
    p.add_argument("--config", help="JSON file of training options (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.training.run import resume_config, train

    if args.resume:
        _, given = config_from_args(argparse.Namespace(**{**vars(args), "config": None}))
        cfg = resume_config(args.out, given)
    else:
        cfg, _ = config_from_args(args)
        if not cfg.data:
            raise MedclError("--data is required (dataset folder)")
    bar = ProgressBar()
    try:
        result = train(cfg, args.out, resume=args.resume, callback=bar)
    finally:
        bar.close()
    if not distributed.from_env().is_main:
        return 0
    best = result["best"]
    print(f"trained {result['step']} steps in {result['elapsed_seconds'] / 60:.1f} min; "
          f"best validation mean Dice {best:.4f} ({cfg.selection}) at step {result['best_step']}"
          if best is not None
          else f"trained {result['step']} steps (no validation split)")
    print(f"run folder: {args.out}")
    return 0
