"""ONNX against torch on the default UNet: the largest logit difference, the argmax agreement,
the export time and one forward pass of each runtime (one thread each).

    python benchmarks/onnx_check.py [--out results/onnx_check.json]

The network is randomly initialised with its BatchNorm statistics moved away from 0 and 1 (as
after training); the input is 8 random 256 x 256 slices. docs/share.md quotes the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medcl.models import build_model
from medcl.models.onnx import INPUT_NAME, export_onnx
from medcl.runtime.cpu import describe

SLICES, SIDE, CLASSES, SEED = 8, 256, 4, 0
#: BatchNorm running statistics after training lie around, not at, mean 0 and variance 1
MEAN_RANGE, VAR_RANGE = (-0.5, 0.5), (0.5, 2.0)


def main() -> None:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the record as JSON")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = build_model("unet", in_channels=1, num_classes=CLASSES).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(*MEAN_RANGE)
            module.running_var.uniform_(*VAR_RANGE)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    x = torch.randn(SLICES, 1, SIDE, SIDE)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "unet.onnx", in_channels=1)
        export_s = time.perf_counter() - start
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        session.run(None, {INPUT_NAME: x.numpy()})  # warm-up
        start = time.perf_counter()
        got = session.run(None, {INPUT_NAME: x.numpy()})[0]
        onnx_s = time.perf_counter() - start
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        expected = model(x).numpy()
        torch_s = time.perf_counter() - start
    record = {"input": [SLICES, 1, SIDE, SIDE], "classes": CLASSES,
              "max_abs_logit_difference": float(np.abs(got - expected).max()),
              "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
              "export_s": round(export_s, 2), "onnxruntime_s": round(onnx_s, 3),
              "torch_fp32_s": round(torch_s, 3), "threads": 1, "cpu": describe(),
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    print(json.dumps(record, indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
