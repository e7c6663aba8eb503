"""``medcl postprocess``: choose a finished run's post-processing on its validation cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("postprocess", help="choose a run's connected-component post-processing "
                       "on its validation cases (done by 'medcl train' unless --postprocessing "
                       "none); 'medcl predict' applies it")
    p.add_argument("run", help="run folder written by 'medcl train'")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.inference.postprocessing import POSTPROCESSING_FILE
    from medcl.training.postprocessing_choice import select_postprocessing

    select_postprocessing(args.run, device=args.device)
    path = Path(args.run) / POSTPROCESSING_FILE
    print(f"{path}: {json.dumps(json.loads(path.read_text()))}")
    return 0
