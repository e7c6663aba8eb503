"""Peak memory and seconds of preprocessing and predicting one large CT volume.

    python benchmarks/ct_memory.py [--shape 512 512 150] [--out benchmarks/results/ct_memory.json]

Generates a BTCV-like phantom (``medcl.data.synthetic_ct``, 14 classes with background) at
0.8 x 0.8 x 2.5 mm, then, each in a fresh process so that its peak is its own: ``preprocess``
(read, window/normalise, resample to 0.8 mm slices) and ``predict`` (a randomly initialised
default UNet with 14 classes through ``predict_path``, label map written). Peak memory is the
process's VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACING = (0.8, 0.8, 2.5)


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def phase(name: str, folder: Path) -> dict:
    import torch

    from medcl.data.io import load_image
    from medcl.data.labels import LabelSpec
    from medcl.data.preprocessing import PreprocessConfig, image_to_slices
    from medcl.data.synthetic_ct import BTCV_ORGANS
    from medcl.inference.predictor import Predictor, predict_path
    from medcl.models import build_model

    image_path = folder / "img" / "img0001.nii.gz"
    preprocess = PreprocessConfig(target_spacing=SPACING[0])
    start = time.perf_counter()
    if name == "preprocess":
        image = load_image([image_path])
        slices = image_to_slices(image.data, image.spacing[:2], preprocess)
        shape = list(slices.shape)
    else:
        spec = LabelSpec(class_names=("background", *BTCV_ORGANS),
                         label_values=tuple(range(len(BTCV_ORGANS) + 1)),
                         ignore_value=len(BTCV_ORGANS) + 1, channel_names=("CT",))
        torch.manual_seed(0)
        model = build_model("unet", in_channels=1, num_classes=spec.num_classes)
        predictor = Predictor(model, spec, preprocess, device=torch.device("cpu"),
                              batch_size=16)
        predict_path(image_path, folder / "pred", predictor, overwrite=True)
        shape = None
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib(),
            "slices_shape": shape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 150))
    parser.add_argument("--out", help="write the result JSON here")
    parser.add_argument("--phase", choices=("preprocess", "predict"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, Path(args.folder))))
        return
    from medcl.data.synthetic_ct import generate_ct_dataset
    from medcl.runtime.cpu import describe

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ct"
        start = time.perf_counter()
        generate_ct_dataset(folder, num_cases=1, shape=tuple(args.shape), spacing=SPACING)
        record = {"command": " ".join(["python"] + sys.argv), "commit": commit,
                  "machine": {**describe(), "cores": os.cpu_count()}, "shape": list(args.shape),
                  "spacing_mm": SPACING, "generate_seconds": time.perf_counter() - start}
        for name in ("preprocess", "predict"):
            proc = subprocess.run([sys.executable, __file__, "--phase", name, "--folder",
                                   str(folder)], capture_output=True, text=True, check=True)
            record[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(name, record[name], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
