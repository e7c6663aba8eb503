"""``medcl export``: a run -> a model file to hand to someone (``.medcl``), or ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's model as one file to share (model.medcl: "
                       "weights, configuration, labels, post-processing, validation scores; "
                       "'medcl predict -m' and 'medcl train --init-from' read it) or as ONNX")
    p.add_argument("run", help="run folder written by 'medcl train', or a checkpoint file in it")
    p.add_argument("out", help="the file to write: NAME.medcl, or NAME.onnx for ONNX (with "
                   "NAME.onnx.json: the preprocessing it needs)")
    p.add_argument("--onnx", action="store_true", help="write ONNX whatever OUT's suffix")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--licence", help="the licence you share the weights under (stored in the "
                   "model file or the ONNX file's JSON; default: unspecified). The training "
                   "data's licence applies to weights learnt from it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a file medcl export wrote (nothing else)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.training.export import ONNX_SUFFIX, export_run, export_run_onnx

    options = {"checkpoint": args.checkpoint, "licence": args.licence,
               "overwrite": args.overwrite}
    if args.onnx or Path(args.out).suffix == ONNX_SUFFIX:
        onnx, sidecar = export_run_onnx(args.run, args.out, **options)
        print(f"wrote {onnx} and {sidecar}")
    else:
        print(f"wrote {export_run(args.run, args.out, **options)}")
    return 0
