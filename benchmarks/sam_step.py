"""MedCL-SAM step time and FLOPs before and after one-pass decoding, on the same batch.

    python benchmarks/sam_step.py --repeats 7 --threads 2

"before": one decoder pass per (input, prompt) and the union prompt decoded for every input
(views and inter-mixes, as the objective asked before: 16 inputs x 4 prompts = 64 passes for
batch 4); "after": all prompts of an input in one pass (``--sam-decode joint``) and the union
for the views only. Both run the same objective on the same batch with the same mixing draws;
the batch's embeddings are precomputed first (as training now does), so the times are the
decoder's and the losses'. The two variants alternate, ``--repeats`` times each, and the median
is reported (the machine may be shared: the load average is recorded). Also times the
inference decode of 16 slices (before: per prompt with the union decoded and dropped; after:
joint, no union) and counts FLOPs of each (``torch.utils.flop_counter``).

Writes ``benchmarks/results/sam_step.json``. Uses the real MSCMR data (few-scribble setting) and
the README's LiteMedSAM configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import DATA, LABELS, REPO, machine, peak_rss_mib  # noqa: E402

SAM_OPTIONS = dict(model="lite_medsam", crop_size=256, crop_mode="center", rotate_degrees=0.0,
                   scale_min=1.0, scale_max=1.0, flip_prob=0.0, rot90=False, precision="bf16",
                   lr=5e-4, warmup_steps=10)
INFER_SLICES = 16
STEP_SEED = 0


class UnionForAll(nn.Module):
    """The former objective's request: the union of every input, the views' kept."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x, **kwargs):
        rows = kwargs.get("return_union")
        if rows is None or rows is True:
            return self.network(x, **kwargs)
        logits, union = self.network(x, **{**kwargs, "return_union": True})
        return logits, union[:rows]


def build_trainer(args: argparse.Namespace, run_dir: Path):
    from medcl.training.config import TrainConfig
    from medcl.training.data import load_training_data
    from medcl.training.trainer import Trainer

    cfg = TrainConfig(data=str(DATA), labels=str(LABELS), method="medcl", num_scribbled=5,
                      target_spacing=1.36719, batch_size=args.batch_size,
                      num_threads=args.threads, device="cpu", **SAM_OPTIONS)
    data, cfg = load_training_data(cfg)
    return Trainer(cfg, data, run_dir)


def variants(trainer) -> dict:
    """``name -> (decode_mode, network the objective calls)``."""
    return {"before": ("per_prompt", UnionForAll(trainer.network)),
            "after": ("joint", trainer.network)}


def one_step(trainer, network: nn.Module, batch: dict) -> float:
    start = time.perf_counter()
    loss, _ = trainer.objective(network, batch, torch.Generator().manual_seed(STEP_SEED))
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    return time.perf_counter() - start


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", default=str(REPO / "runs" / "sam_step"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    trainer = build_trainer(args, Path(args.run))
    model = trainer.model
    model.train()
    batch = trainer.next_batch()
    trainer.network.apply(model.precompute, batch["image"])
    slices = batch["image"][:1].repeat(INFER_SLICES, 1, 1, 1)
    with torch.no_grad():
        embeddings = trainer.network(slices, stage="encode")
    size = tuple(slices.shape[-2:])
    kinds = variants(trainer)
    times: dict[str, list[float]] = {name: [] for name in kinds}
    infer: dict[str, list[float]] = {name: [] for name in kinds}
    for name, (mode, network) in kinds.items():  # warm-up
        model.decode_mode = mode
        one_step(trainer, network, batch)
    for _ in range(args.repeats):
        for name, (mode, network) in kinds.items():
            model.decode_mode = mode
            times[name].append(one_step(trainer, network, batch))
            model.eval()
            with torch.no_grad():
                start = time.perf_counter()
                trainer.network(embeddings, stage="decode", size=size,
                                return_union=name == "before")
                infer[name].append(time.perf_counter() - start)
            model.train()
    result = {}
    for name, (mode, network) in kinds.items():
        model.decode_mode = mode
        step_flops = flops(lambda: trainer.objective(
            network, batch, torch.Generator().manual_seed(STEP_SEED))[0].backward())
        model.eval()
        with torch.no_grad():
            infer_flops = flops(lambda: trainer.network(embeddings, stage="decode", size=size,
                                                        return_union=name == "before"))
        model.train()
        result[name] = {"decode_mode": mode, "union": "all inputs" if name == "before"
                        else "views only", "step_seconds_median": statistics.median(times[name]),
                        "step_seconds": [round(t, 3) for t in times[name]],
                        "step_gflop": step_flops / 1e9,
                        "infer_decode_16_slices_seconds_median": statistics.median(infer[name]),
                        "infer_decode_16_slices_gflop": infer_flops / 1e9}
        print(name, json.dumps(result[name]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    record = {"command": " ".join(["python"] + sys.argv), "commit": commit, "machine": machine(),
              "shared_machine": "other engineers' jobs ran on the same 2 cores",
              "load_average_start": load_start, "load_average_end": os.getloadavg(),
              "batch_size": args.batch_size, "options": SAM_OPTIONS, "repeats": args.repeats,
              "speedup_median": (result["before"]["step_seconds_median"]
                                 / result["after"]["step_seconds_median"]),
              "peak_rss_mib": peak_rss_mib(), **result}
    out = REPO / "benchmarks" / "results" / "sam_step.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
