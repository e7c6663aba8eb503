"""``medcl predict``: segment NIfTI volumes or DICOM series with a trained run."""

from __future__ import annotations

import argparse
import sys

from medcl.cli.options import bounded
from medcl.data.dicom_seg import OUTPUT_FORMATS
from medcl.data.geometry import GEOMETRY_MODES
from medcl.errors import CasesFailed
from medcl.inference.postprocessing import POSTPROCESSING_MODES
from medcl.inference.window import WINDOW_MODES
from medcl.runtime.precision import PRECISION_CHOICES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment NIfTI volumes or DICOM series with a trained run")
    p.add_argument("-i", "--input", required=True,
                   help="NIfTI file, or folder of NIfTI files and/or DICOM series folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("-m", "--model", required=True,
                   help="run folder written by 'medcl train', a checkpoint file in it, or a model "
                   "file written by 'medcl export' (NAME.medcl)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--save-probs", action="store_true",
                   help="also write OUTPUT/probs/{case}.nii.gz")
    p.add_argument("--largest-component", action="store_true",
                   help="keep the largest 3D connected component of each class")
    p.add_argument("--postprocessing", choices=POSTPROCESSING_MODES, default="auto",
                   help="auto: the run's post-processing chosen on its validation cases "
                   "(RUN/postprocessing.json, none if absent); none: raw argmax")
    p.add_argument("--window", choices=WINDOW_MODES, default="auto",
                   help="what the network sees: full slices; center: the centre window of the "
                   "training crops (larger slices cropped, background outside); pad: smaller "
                   "slices padded to it as in training, larger ones whole; auto: center for a "
                   "SAM-family network trained on centre crops, full otherwise")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="network precision; auto: bf16 where this machine runs it natively, "
                   "else fp32")
    p.add_argument("--geometry", choices=GEOMETRY_MODES,
                   help="header geometry policy for the channels (default: the run's)")
    p.add_argument("--overlays", type=bounded(int, 0), default=0, metavar="N",
                   help="write N overlay PNGs per case into OUTPUT/overlays")
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, default="nifti",
                   help="nifti: OUTPUT/{case}.nii.gz; dicom-seg: OUTPUT/{case}.dcm, a DICOM SEG "
                   "over each case's DICOM series (series input only; pip install "
                   "'medcl[dicom-seg]')")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace the predictions this run writes that medcl wrote "
                          "(nothing else)")
    existing.add_argument("--continue", dest="skip_existing", action="store_true",
                          help="skip cases whose prediction already exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medcl.inference.predictor import Predictor, predict_path

    extra = {"geometry": args.geometry} if args.geometry else {}
    predictor = Predictor.from_run(args.model, checkpoint=args.checkpoint, device=args.device,
                                   flip_tta=args.tta, precision=args.precision,
                                   postprocessing=args.postprocessing, window=args.window,
                                   **extra)
    with tqdm(unit="case", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            written = predict_path(args.input, args.output, predictor,
                                   save_probs=args.save_probs,
                                   largest_component=args.largest_component,
                                   overwrite=args.overwrite, skip_existing=args.skip_existing,
                                   overlay_slices=args.overlays,
                                   output_format=args.output_format,
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
