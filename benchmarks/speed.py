"""Speed and memory on this machine: training throughput (pCE and MedCL steps) with the
achieved FLOP rate against the machine's peak, the data-loading share of a step, and UNet
inference time and peak memory per MSCMR test volume.

    python benchmarks/speed.py --precision bf16 --channels-last

Writes ``benchmarks/results/speed_{precision}[_compile].json`` (``--compile``: torch.compile).
Uses the real MSCMR data (``$MEDCL_DATA/MSCMR_dataset``), the few-scribble setting, the README's
default model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"
LABELS = REPO / "examples" / "mscmr.json"
#: FLOPs per cycle per core. AMD Zen 4 executes AVX-512 on two 256-bit FMA pipes:
#: fp32 2 pipes x 8 lanes x 2 (multiply + add) = 32; bf16 VDPBF16PS 2 pipes x 16 pairs x 2 = 64.
FLOPS_PER_CYCLE = {"fp32": 32, "bf16": 64}


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    mhz = next(float(line.split(":")[1]) for line in info if line.startswith("cpu MHz"))
    model = next(line.split(":")[1].strip() for line in info if line.startswith("model name"))
    flags = next(line.split(":")[1] for line in info if line.startswith("flags")).split()
    return {"cpu": model, "cores": os.cpu_count(), "mhz": mhz,
            "avx512_bf16": "avx512_bf16" in flags, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}


def peak_gflops(facts: dict, precision: str) -> float:
    return facts["cores"] * facts["mhz"] / 1e3 * FLOPS_PER_CYCLE[precision]


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (VmHWM; unlike ru_maxrss it is not
    inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured_matmul_gflops(precision: str, size: int = 2048, repeats: int = 5) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def trainer_for(method: str, args: argparse.Namespace, run_dir: Path):
    from medcl.training.config import TrainConfig
    from medcl.training.data import load_training_data
    from medcl.training.trainer import Trainer

    cfg = TrainConfig(data=str(DATA), labels=str(LABELS), method=method, num_scribbled=5,
                      target_spacing=1.36719, batch_size=args.batch_size,
                      crop_size=args.crop_size, precision=args.precision,
                      channels_last=args.channels_last, compile=args.compile,
                      num_threads=args.threads, device="cpu")
    data, cfg = load_training_data(cfg)
    return Trainer(cfg, data, run_dir)


def time_steps(trainer, steps: int) -> dict:
    trainer.model.train()
    start = time.perf_counter()
    trainer.train_step()  # the first step compiles, with --compile
    first_step_s = time.perf_counter() - start
    trainer.train_step()  # warm-up
    data_s = step_s = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = trainer.next_batch()
        t1 = time.perf_counter()
        loss, _ = trainer.step_module(batch, trainer.step_generator)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        t2 = time.perf_counter()
        data_s += t1 - t0
        step_s += t2 - t0
    batch = trainer.next_batch()
    trainer.network.use_compiled = False  # the counter sees eager operators only
    with FlopCounterMode(display=False) as counter:
        loss, _ = trainer.step_module(batch, trainer.step_generator)
        loss.backward()
    trainer.network.use_compiled = True
    flops = counter.get_total_flops()
    per_step = step_s / steps
    return {"steps": steps, "seconds_per_step": per_step, "first_step_s": first_step_s,
            "compiled": trainer.network._compiled is not None,
            "source_slices_per_s": trainer.cfg.batch_size / per_step,
            "data_share": data_s / step_s, "flops_per_step": flops,
            "achieved_gflops": flops / per_step / 1e9}


def inference(args: argparse.Namespace, run_dir: Path) -> dict:
    """Per test volume: load, preprocess, predict, resample back, write (in this process)."""
    from medcl.inference.predictor import Predictor, predict_path

    predictor = Predictor.from_run(run_dir, device="cpu", precision=args.precision)
    images = sorted((DATA / "TestSet" / "images").iterdir())
    out = run_dir / "speed_pred"
    times = []
    for image in images:
        start = time.perf_counter()
        predict_path(image, out, predictor, overwrite=True)
        times.append(time.perf_counter() - start)
    return {"volumes": len(images), "seconds_per_volume_mean": sum(times) / len(times),
            "seconds_per_volume_max": max(times),
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=("all", "train", "infer"), default="all")
    parser.add_argument("--run", default=str(REPO / "runs" / "speed"),
                        help="scratch run folder (a checkpoint for the inference part)")
    parser.add_argument("--save", help="with --part infer: also write "
                        "benchmarks/results/speed_infer_SAVE.json (e.g. for a trained SAM run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run)
    if args.part == "infer":  # separate process, so its peak memory is its own
        result = inference(args, run_dir)
        if args.save:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip()
            model = json.loads((run_dir / "config.json").read_text()).get("model", "unet")
            record = {"command": " ".join(["python"] + sys.argv), "commit": commit,
                      "torch": torch.__version__, "threads": args.threads, "machine": machine(),
                      "model": model, "precision": args.precision, "inference": result}
            out = REPO / "benchmarks" / "results" / f"speed_infer_{args.save}.json"
            out.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(result))
        return
    facts = machine()
    record = {"command": " ".join(["python"] + sys.argv), "machine": facts,
              "peak_gflops": {p: peak_gflops(facts, p) for p in FLOPS_PER_CYCLE},
              "peak_derivation": f"{facts['cores']} cores x {facts['mhz']:.0f} MHz (/proc/cpuinfo; "
                                 f"the boost clock of this VM is not visible) x FLOP/cycle "
                                 f"{FLOPS_PER_CYCLE} (Zen 4: two 256-bit FMA pipes)",
              "matmul_gflops": {p: measured_matmul_gflops(p) for p in FLOPS_PER_CYCLE},
              "precision": args.precision, "channels_last": args.channels_last,
              "compile": args.compile, "train": {}}
    for method in ("pce", "medcl"):
        trainer = trainer_for(method, args, run_dir / method)
        result = time_steps(trainer, args.steps)
        result["fraction_of_peak"] = result["achieved_gflops"] / record["peak_gflops"][args.precision]
        result["fraction_of_matmul"] = (result["achieved_gflops"]
                                        / record["matmul_gflops"][args.precision])
        result["peak_rss_mib_so_far"] = peak_rss_mib()
        record["train"][method] = result
        if method == "pce":
            run_dir.mkdir(parents=True, exist_ok=True)
            trainer.run_dir = run_dir
            trainer.save("last")
            (run_dir / "config.json").write_text(json.dumps(trainer.cfg.to_dict()))
        print(method, json.dumps(result), flush=True)
    proc = subprocess.run([sys.executable, __file__, "--part", "infer", "--run", str(run_dir),
                           "--precision", args.precision, "--threads", str(args.threads)],
                          capture_output=True, text=True, check=True)
    record["inference_unet"] = json.loads(proc.stdout.strip().splitlines()[-1])
    suffix = "_compile" if args.compile else ""
    out = REPO / "benchmarks" / "results" / f"speed_{args.precision}{suffix}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
