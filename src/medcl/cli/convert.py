"""``medcl convert``: write a dataset in the nnU-Net v2 layout."""

from __future__ import annotations

import argparse

from medcl.data.geometry import GEOMETRY_MODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="write a dataset (MSCMR, MyoPS, any described layout) "
                       "in the nnU-Net v2 layout")
    p.add_argument("source", help="dataset folder")
    p.add_argument("out", help="output folder (imagesTr, labelsTr, imagesTs, dataset.json, "
                   "splits_final.json)")
    p.add_argument("--labels", help="dataset description JSON (default: SOURCE/dataset.json)")
    p.add_argument("--geometry", choices=GEOMETRY_MODES, default="auto",
                   help="header geometry policy (docs/data.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier conversion in OUT: its files only, removing its "
                   "cases that this one does not write again")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.data.convert import convert_to_nnunet

    dataset = convert_to_nnunet(args.source, args.out, labels_file=args.labels,
                                geometry=args.geometry, overwrite=args.overwrite)
    counts = ", ".join(f"{s} {len(c)}" for s, c in dataset.splits.items())
    print(f"wrote {dataset.layout} layout ({counts}) to {args.out} in the nnU-Net v2 layout")
    return 0
