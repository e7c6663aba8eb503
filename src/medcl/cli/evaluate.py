"""``medcl evaluate``: Dice, HD95 and ASSD of predictions against labels (+ HTML report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medcl.cli.options import bounded
from medcl.data.geometry import GEOMETRY_MODES
from medcl.evaluation.metrics import HD95_CONVENTIONS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice, HD95 and ASSD of predictions against labels")
    p.add_argument("gt_dir",
                   help="folder of ground-truth label maps (NIfTI or DICOM series folders)")
    p.add_argument("pred_dir", help="folder of predictions ({case}.nii.gz)")
    p.add_argument("-o", "--output", help="folder for summary.json/summary.md (default: PRED_DIR)")
    p.add_argument("--labels", help="label definition JSON (class names)")
    p.add_argument("--images", help="image folder (NIfTI or DICOM series), for overlay PNGs")
    p.add_argument("--overlays", type=bounded(int, 0), default=1, metavar="N",
                   help="overlays per case when --images is given: the N slices with the most "
                        "foreground, plus the worst-Dice slice (default: 1)")
    p.add_argument("--hd95", choices=HD95_CONVENTIONS, default=HD95_CONVENTIONS[0],
                   help="HD95 convention: medpy = 95th percentile of both directions pooled, "
                        "monai = max of the two directed 95th percentiles (default: medpy)")
    p.add_argument("--report", action="store_true",
                   help="also write OUTPUT/report.html (tables, box plots, overlays; one file)")
    p.add_argument("--geometry", choices=GEOMETRY_MODES, default="auto",
                   help="header geometry policy, prediction vs ground truth (docs/data.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcl.data.labels import LabelSpec
    from medcl.evaluation.evaluate import evaluate_folders, spec_options
    from medcl.evaluation.markdown import format_markdown

    options = spec_options(LabelSpec.from_file(args.labels)) if args.labels else {}
    out = Path(args.output or args.pred_dir)
    summary = evaluate_folders(args.gt_dir, args.pred_dir, **options, geometry=args.geometry,
                               out_dir=out, image_dir=args.images,
                               overlay_dir=(out / "overlays" if args.images and args.overlays
                                            else None),
                               num_overlay_slices=args.overlays, hd95_convention=args.hd95)
    print(format_markdown(summary))
    print(f"summary written to {out / 'summary.json'}")
    if args.report:
        from medcl.evaluation.report import REPORT_HTML, write_report

        print(f"report written to {write_report(summary, out / REPORT_HTML)}")
    return 0
