"""``medcl scribble``: simulate scribbles from dense label maps."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scribble", help="simulate scribbles from dense label maps")
    p.add_argument("input", help="folder of dense label maps")
    p.add_argument("output", help="folder for the scribble maps (same file names)")
    p.add_argument("--labels", required=True,
                   help="label definition JSON with an 'ignore' value (unlabelled voxels)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="foreground classes that get strokes (default: all)")
    p.add_argument("--as-background", nargs="+", default=(), metavar="NAME",
                   help="classes drawn over as background, with no strokes of their own")
    p.add_argument("--slice-fraction", type=float, default=argparse.SUPPRESS,
                   help="share of the labelled slices that get scribbles (default: 1)")
    p.add_argument("--stroke-width-mm", type=float, default=argparse.SUPPRESS,
                   help="width of foreground strokes in mm (default: 0.5, i.e. one voxel)")
    p.add_argument("--extent", type=float, default=argparse.SUPPRESS,
                   help="share of a structure's medial line, outline or chord a stroke covers "
                        "(default: 0.9)")
    p.add_argument("--background-width-mm", type=float, default=argparse.SUPPRESS,
                   help="width of background strokes in mm (default: 2)")
    p.add_argument("--background-strokes", type=int, default=argparse.SUPPRESS,
                   help="background strokes per slice (default: 4)")
    p.add_argument("--background-distance-mm", type=float, nargs=2, default=argparse.SUPPRESS,
                   metavar=("LOW", "HIGH"),
                   help="range of distances of background strokes from the foreground "
                        "(default: 0.5 9)")
    p.add_argument("--no-background", dest="background", action="store_false",
                   default=argparse.SUPPRESS, help="no background strokes")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing scribble files that medcl wrote")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medcl.data.labels import LabelSpec
    from medcl.data.scribble_files import named_options, scribble_folder

    spec = LabelSpec.from_file(args.labels)
    names = ("slice_fraction", "stroke_width_mm", "extent", "background_width_mm",
             "background_strokes", "background_distance_mm", "background")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
                 if k in names}
    options = named_options(spec, classes=args.classes, as_background=args.as_background,
                            **overrides)
    with tqdm(unit="case", file=sys.stderr, dynamic_ncols=True) as bar:
        written = scribble_folder(args.input, args.output, spec, options=options,
                                  seed=args.seed, overwrite=args.overwrite,
                                  progress=lambda case: bar.update(1))
    print(f"wrote {len(written)} scribble files to {args.output}")
    return 0
