"""The ``medcl`` command line: thin argparse faces over importable functions.

Errors raised on purpose (:class:`~medcl.errors.MedclError`) become one line on stderr. Exit
codes: 0 ok, 1 some cases failed (predict), 2 bad input or option, 130/143 interrupted by
SIGINT/SIGTERM (training saved ``last.pt`` first).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Sequence

from medcl import __version__
from medcl.data.geometry import GEOMETRY_MODES
from medcl.errors import CasesFailed, MedclError
from medcl.evaluation.metrics import HD95_CONVENTIONS
from medcl.runtime import distributed
from medcl.runtime.precision import PRECISION_CHOICES
from medcl.training.config import TrainConfig, field_type

log = logging.getLogger("medcl")
EXIT_USAGE = 2
EXIT_SIGINT = 130


def _bounded(kind: type, low: float, *, strict: bool = False):
    """An argparse type: ``kind`` and ``> low`` (``strict``) or ``>= low``, else a usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value
    return parse


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; unset flags are absent from the namespace."""
    group = parser.add_argument_group("training configuration")
    for f in dataclasses.fields(TrainConfig):
        base, _optional, is_list = field_type(f)
        kw = {"default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if f.default not in (None, "") and f.default is not dataclasses.MISSING:
            kw["help"] += f" (default: {f.default})"
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = base
            if is_list:
                kw["nargs"] = "+"
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
        group.add_argument(_flag(f.name), dest=f.name, **kw)


def _config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    base = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    return TrainConfig.from_dict({**base, **given}), given


class _ProgressBar:
    """tqdm bar fed by the training callback.

    It counts steps, or seconds when the run has a wall-clock budget (whichever limit a
    run stops at is what its ETA should follow, and with a budget that is the time).
    """

    def __init__(self) -> None:
        self.bar = None

    def _open(self, record: dict) -> None:
        from tqdm import tqdm

        by_time = bool(record.get("budget"))
        total = int(record["budget"]) if by_time else record["total"]
        self.by_time = by_time
        self.bar = tqdm(total=total, unit="s" if by_time else "step", dynamic_ncols=True,
                        file=sys.stderr)

    def __call__(self, record: dict) -> None:
        if record["event"] == "step":
            if self.bar is None:
                self._open(record)
            self.bar.n = min(int(record["elapsed"]), self.bar.total) if self.by_time else record["step"]
            post = {"step": record["step"], "loss": f"{record['loss']:.4f}",
                    "sl/s": f"{record['slices_per_s']:.1f}", "lr": f"{record['lr']:.2e}"}
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif record["event"] == "val" and record["mean_dice"] is not None:
            dice = ", ".join(f"{k} {v:.3f}" for k, v in record["dice"].items())
            message = (f"step {record['step']}: validation mean Dice {record['mean_dice']:.4f} "
                       f"({dice})")
            if self.bar is not None:
                self.bar.write(message)
            else:
                log.info(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_train(args: argparse.Namespace) -> int:
    from medcl.training.run import resume_config, train

    if args.resume:
        _, given = _config_from_args(argparse.Namespace(**{**vars(args), "config": None}))
        cfg = resume_config(args.out, given)
    else:
        cfg, _ = _config_from_args(args)
        if not cfg.data:
            raise MedclError("--data is required (dataset folder)")
    bar = _ProgressBar()
    try:
        result = train(cfg, args.out, resume=args.resume, callback=bar)
    finally:
        bar.close()
    if not distributed.from_env().is_main:
        return 0
    best = result["best"]
    print(f"trained {result['step']} steps in {result['elapsed_seconds'] / 60:.1f} min; "
          f"best validation mean Dice {best:.4f} at step {result['best_step']}" if best is not None
          else f"trained {result['step']} steps (no validation split)")
    print(f"run folder: {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medcl.inference.predictor import Predictor, predict_path

    extra = {"geometry": args.geometry} if args.geometry else {}
    predictor = Predictor.from_run(args.model, checkpoint=args.checkpoint, device=args.device,
                                   flip_tta=args.tta, precision=args.precision, **extra)
    with tqdm(unit="case", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            written = predict_path(args.input, args.output, predictor,
                                   save_probs=args.save_probs,
                                   largest_component=args.largest_component,
                                   overwrite=args.overwrite, skip_existing=args.skip_existing,
                                   overlay_slices=args.overlays,
                                   progress=lambda case: bar.update(1))
        except CasesFailed as exc:
            bar.close()
            for case, reason in exc.failures.items():
                print(f"medcl predict: case {case} failed: {reason}", file=sys.stderr)
            print(f"wrote {len(exc.written)} predictions to {args.output}; "
                  f"{len(exc.failures)} cases failed")
            return exc.exit_code
    print(f"wrote {len(written)} predictions to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medcl.data.labels import LabelSpec
    from medcl.evaluation.evaluate import (
        evaluate_folders,
        format_markdown,
        spec_options,
    )

    options = spec_options(LabelSpec.from_file(args.labels)) if args.labels else {}
    out = Path(args.output or args.pred_dir)
    summary = evaluate_folders(args.gt_dir, args.pred_dir, **options, geometry=args.geometry,
                               out_dir=out, image_dir=args.images,
                               overlay_dir=out / "overlays" if args.images and args.overlays else None,
                               num_overlay_slices=args.overlays, hd95_convention=args.hd95)
    print(format_markdown(summary))
    print(f"summary written to {out / 'summary.json'}")
    if args.report:
        from medcl.evaluation.report import REPORT_HTML, write_report

        print(f"report written to {write_report(summary, out / REPORT_HTML)}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from medcl.data.convert import convert_to_nnunet

    dataset = convert_to_nnunet(args.source, args.out, labels_file=args.labels,
                                geometry=args.geometry, overwrite=args.overwrite)
    counts = ", ".join(f"{s} {len(c)}" for s, c in dataset.splits.items())
    print(f"wrote {dataset.layout} layout ({counts}) to {args.out} in the nnU-Net v2 layout")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from medcl.demo import run_demo

    bar = _ProgressBar()
    try:
        summary = run_demo(args.out, data=args.data, labels=args.labels, minutes=args.minutes,
                           device=args.device, overwrite=args.overwrite, callback=bar)
    finally:
        bar.close()
    from medcl.evaluation.evaluate import format_markdown

    print(format_markdown(summary))
    print(f"demo outputs in {args.out}")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from medcl.extras import require

    for module in ("fastapi", "uvicorn"):
        require(module, extra="annotate", feature="medcl annotate")
    from medcl.annotate.server import open_session, serve

    session = open_session(args.dataset, run=args.run, labels=args.labels,
                           train_config=args.train_config)
    print(f"medcl annotate: http://{args.host}:{args.port}/ (Ctrl+C to stop)", flush=True)
    serve(session, host=args.host, port=args.port)
    return 0


def cmd_scribble(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a segmentation network from scribbles")
    p.add_argument("--out", required=True, help="run folder (config, metrics, checkpoints)")
    p.add_argument("--config", help="JSON file of training options (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment NIfTI volumes or DICOM series with a trained run")
    p.add_argument("-i", "--input", required=True,
                   help="NIfTI file, or folder of NIfTI files and/or DICOM series folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("-m", "--model", required=True,
                   help="run folder written by 'medcl train', or a checkpoint file in it")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--save-probs", action="store_true", help="also write OUTPUT/probs/{case}.nii.gz")
    p.add_argument("--largest-component", action="store_true",
                   help="keep the largest 3D connected component of each class")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="network precision; auto: bf16 where this machine runs it natively, "
                   "else fp32")
    p.add_argument("--geometry", choices=GEOMETRY_MODES,
                   help="header geometry policy for the channels (default: the run's)")
    p.add_argument("--overlays", type=_bounded(int, 0), default=0, metavar="N",
                   help="write N overlay PNGs per case into OUTPUT/overlays")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the predictions this run writes (nothing else)")
    p.add_argument("--continue", dest="skip_existing", action="store_true",
                   help="skip cases whose prediction already exists")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="Dice, HD95 and ASSD of predictions against labels")
    p.add_argument("gt_dir",
                   help="folder of ground-truth label maps (NIfTI or DICOM series folders)")
    p.add_argument("pred_dir", help="folder of predictions ({case}.nii.gz)")
    p.add_argument("-o", "--output", help="folder for summary.json/summary.md (default: PRED_DIR)")
    p.add_argument("--labels", help="label definition JSON (class names)")
    p.add_argument("--images", help="image folder (NIfTI or DICOM series), for overlay PNGs")
    p.add_argument("--overlays", type=_bounded(int, 0), default=1, metavar="N",
                   help="overlays per case when --images is given: the N slices with the most "
                        "foreground, plus the worst-Dice slice (default: 1)")
    p.add_argument("--hd95", choices=HD95_CONVENTIONS, default=HD95_CONVENTIONS[0],
                   help="HD95 convention: medpy = 95th percentile of both directions pooled, "
                        "monai = max of the two directed 95th percentiles (default: medpy)")
    p.add_argument("--report", action="store_true",
                   help="also write OUTPUT/report.html (tables, box plots, overlays; one file)")
    p.add_argument("--geometry", choices=GEOMETRY_MODES, default="auto",
                   help="header geometry policy, prediction vs ground truth (docs/data.md)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("convert", help="write a dataset (MSCMR, MyoPS, any described layout) "
                       "in the nnU-Net v2 layout")
    p.add_argument("source", help="dataset folder")
    p.add_argument("out", help="output folder (imagesTr, labelsTr, imagesTs, dataset.json, "
                   "splits_final.json)")
    p.add_argument("--labels", help="dataset description JSON (default: SOURCE/dataset.json)")
    p.add_argument("--geometry", choices=GEOMETRY_MODES, default="auto",
                   help="header geometry policy (docs/data.md)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="generate data, train, predict and evaluate in minutes")
    p.add_argument("--out", default="demo_run", help="output folder (default: demo_run)")
    p.add_argument("--data", help="run on this dataset instead of generated data")
    p.add_argument("--labels", help="label definition JSON for --data")
    p.add_argument("--minutes", type=_bounded(float, 0, strict=True), default=2.0,
                   help="training budget (default: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo's own sub-folders in --out (never --data)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("annotate", help="scribble, train and review in the browser (localhost)")
    p.add_argument("dataset", help="dataset folder (nnU-Net or MSCMR layout, or images alone)")
    p.add_argument("--run", help="run folder: its predictions are shown, rounds trained from "
                   "the page go into RUN/annotate_rounds/")
    p.add_argument("--labels", help="label definition JSON (default: DATASET/dataset.json)")
    p.add_argument("--train-config", help="JSON training options of rounds started from the "
                   "page (default: the run's config.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    p.set_defaults(func=cmd_annotate)

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
    p.add_argument("--overwrite", action="store_true", help="replace existing scribble files")
    p.set_defaults(func=cmd_scribble)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not distributed.from_env().is_main:  # under torchrun only rank 0 talks
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return args.func(args)
    except MedclError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the wrapped library said
        print(f"medcl {args.command}: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
