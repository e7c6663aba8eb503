"""Peak memory of a MedCL-SAM training run in the README's configuration, in minutes on a
shared CPU.

    python benchmarks/sam_memory.py --steps 20 --batch-size 8 --threads 2

Builds the README's LiteMedSAM run (few-scribble MSCMR, frozen encoder, centre crops, bf16),
precomputes the embeddings of every training and validation slice through the real code path
(keys, batching, pinned bf16 store), trains ``--steps`` steps and validates once, and reports the
process's peak resident memory (VmHWM). One shortcut, for time only: the image encoder is real
for the LAST precompute call (4 slices, so the encoder's own working memory is in the peak, on
top of the full store) and a stand-in of the same output shape and dtype for the others (the
encoder costs about 3 CPU-seconds per slice here; the store's size and layout are the same).
The decoder, the losses, the optimiser and validation are the real ones.

Writes ``benchmarks/results/sam_memory_b{batch}[_recompute].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sam_step import SAM_OPTIONS  # noqa: E402
from speed import DATA, LABELS, REPO, machine, peak_rss_mib  # noqa: E402


def main() -> None:
    from medcl.training.config import TrainConfig
    from medcl.training.data import load_training_data
    from medcl.training.embeddings import ENCODER_BATCH
    from medcl.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode", choices=("joint", "per_prompt"), default="joint")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the decoder's activations in the backward pass")
    parser.add_argument("--run", default=str(REPO / "runs" / "sam_memory"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=str(DATA), labels=str(LABELS), method="medcl", num_scribbled=5,
                      target_spacing=1.36719, batch_size=args.batch_size,
                      iterations=args.steps, val_interval=0, num_threads=args.threads,
                      device="cpu", sam_decode=args.decode,
                      sam_recompute=args.recompute, **SAM_OPTIONS)
    data, cfg = load_training_data(cfg)
    trainer = Trainer(cfg, data, Path(args.run))
    sam = trainer.model.sam
    real_encode = sam.encode_images
    shapes = ([(cfg.crop_size, cfg.crop_size)] * len(trainer.sampler.drawable())
              + [tuple(c.image.shape[-2:]) for c in data.val for _ in range(c.image.shape[0])])
    n_calls, run_len = 0, 0
    for i, size in enumerate(shapes):  # the batches of medcl.training.embeddings.precompute
        run_len = run_len + 1 if i and size == shapes[i - 1] and run_len < ENCODER_BATCH else 1
        n_calls += run_len == 1
    calls = [0]
    shape = (sam.mask_decoder.transformer_dim, sam.embedding_size, sam.embedding_size)

    def encode(images):
        calls[0] += 1
        if calls[0] == n_calls:  # the last call: the real encoder, on top of the full store
            return real_encode(images)
        return torch.randn(images.shape[0], *shape, dtype=images.dtype)
    sam.encode_images = encode
    start = time.monotonic()
    trainer.run()
    wall = time.monotonic() - start
    metrics = [json.loads(line) for line in (Path(args.run) / "metrics.jsonl").open()]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    record = {"command": " ".join(["python"] + sys.argv), "commit": commit, "machine": machine(),
              "shared_machine": "other engineers' jobs ran on the same 2 cores",
              "load_average_end": os.getloadavg(), "batch_size": args.batch_size,
              "decode": args.decode, "recompute": args.recompute, "steps": args.steps,
              "options": SAM_OPTIONS,
              "encoder_calls": calls[0], "expected_calls": n_calls,
              "embeddings": next(r for r in metrics if r["event"] == "embeddings"),
              "embeddings_note": "seconds: the stand-in encoder's, not a real precompute time",
              "wall_s": round(wall, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}
    suffix = "_recompute" if args.recompute else ""
    out = REPO / "benchmarks" / "results" / f"sam_memory_b{args.batch_size}{suffix}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
