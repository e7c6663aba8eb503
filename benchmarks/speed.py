"""Speed and memory on this machine, in under two minutes.

Parts (``--part``):

* ``kernel``: one forward + backward + AdamW step of the default UNet on random
  ``batch x crop x crop`` slices, for every configuration in ``--configs`` (precision x memory
  layout), the configurations interleaved round by round so that they share the machine's
  state; median seconds, achieved GFLOP/s and the fraction of the derived peak
  (``benchmarks/cpu_peak.py``). This is the harness for comparing speed choices.
* ``train``: pCE and MedCL trainer steps on the real MSCMR data (few-scribble setting), with the
  data-loading share of a step.
* ``infer``: inference time and peak memory per MSCMR test volume (its own process), of the
  run in ``--run`` (the train part leaves a UNet checkpoint there) or, with ``--untrained
  MODEL``, of an untrained ``MODEL`` (e.g. ``lite_medsam`` with its pretrained encoder; inference
  time does not depend on the weights, and such a run has no post-processing).

    python benchmarks/speed.py                       # kernel + train + infer, precision auto
    python benchmarks/speed.py --part kernel --configs fp32 fp32+cl fp32+cl+b4 fp32+cl+compile
    python benchmarks/speed.py --part infer --untrained lite_medsam --run runs/speed_sam \
        --save lite_medsam_untrained

Writes ``benchmarks/results/speed_{part}_{cpu tag}.json`` naming the machine (CPU model, flags,
the kernel path torch dispatches to), the commit and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from cpu_peak import matmul_gflops, peak
from mscmr import git_commit
from torch.utils.flop_counter import FlopCounterMode

from medcl.models import MODEL_REGISTRY, SAM_MODELS
from medcl.runtime.cpu import AMX_BF16, cpu_info, describe

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"
LABELS = REPO / "examples" / "mscmr.json"
KERNEL_ROUNDS = 5
SAM_CROP = 256  # the SAM benchmark rows' centre crop (docs/results.md)


def machine() -> dict:
    return {**describe(), "cores": os.cpu_count(), "native_bf16": cpu_info().native_bf16,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def cpu_tag() -> str:
    info = cpu_info()
    words = [w for w in info.model.replace("(R)", "").replace("(TM)", "").split() if w.isalnum()]
    # the same model name came with and without AMX exposed: their records must not collide
    return ("_".join(words[:3]).lower() + ("_bf16" if info.native_bf16 else "")
            + ("_amx" if AMX_BF16 in info.flags else ""))


def commit() -> str:
    """The short commit; ``-dirty`` where tracked files differ from it."""
    return git_commit(short=True)


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (VmHWM; unlike ru_maxrss it is not
    inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class KernelConfig:
    """One configuration of the kernel harness, written ``precision[+cl][+compile][+bN][+tN]``:
    ``"fp32+cl+b4+t1"`` is fp32, channels-last, batch 4, one thread (defaults: ``--batch-size``,
    ``--threads``)."""

    name: str
    precision: str
    channels_last: bool = False
    compile: bool = False
    batch_size: int | None = None
    threads: int | None = None

    @classmethod
    def parse(cls, text: str) -> "KernelConfig":
        precision, *options = text.split("+")
        if precision not in ("fp32", "bf16"):
            raise SystemExit(f"--configs {text}: precision must be fp32 or bf16")
        fields: dict = {}
        for option in options:
            if option == "cl":
                fields["channels_last"] = True
            elif option == "compile":
                fields["compile"] = True
            elif option[:1] in ("b", "t") and option[1:].isdigit():
                fields["batch_size" if option[0] == "b" else "threads"] = int(option[1:])
            else:
                raise SystemExit(f"--configs {text}: unknown option {option!r} "
                                 "(valid: cl, compile, b<batch size>, t<threads>)")
        return cls(name=text, precision=precision, **fields)


def default_configs() -> list[str]:
    """fp32 with and without channels-last; the bf16 pair only where bf16 is native (emulated
    bf16 steps take about 10 s each on an AVX2 CPU: ask for them with ``--configs``)."""
    configs = ["fp32", "fp32+cl"]
    return configs + (["bf16", "bf16+cl"] if cpu_info().native_bf16 else [])


def kernel(args: argparse.Namespace) -> dict:
    """Median step time of each configuration, interleaved round by round."""
    from medcl.models import build_model
    from medcl.runtime.precision import FastForward

    configs = [KernelConfig.parse(text) for text in args.configs]
    steps, flops, batches = {}, {}, {}
    for config in configs:
        batch_size = config.batch_size or args.batch_size
        generator = torch.Generator().manual_seed(0)
        batches[config.name] = (
            torch.randn(batch_size, 1, args.crop_size, args.crop_size, generator=generator),
            torch.randint(0, 4, (batch_size, args.crop_size, args.crop_size), generator=generator))
        torch.manual_seed(0)
        model = build_model("unet", in_channels=1, num_classes=4)
        steps[config.name] = (FastForward(model, precision=config.precision,
                                          channels_last=config.channels_last,
                                          compile=config.compile),
                              torch.optim.AdamW(model.parameters()))
    times: dict[str, list[float]] = {config.name: [] for config in configs}

    threads = {config.name: config.threads or args.threads for config in configs}

    def step(name: str) -> None:
        net, optimizer = steps[name]
        x, y = batches[name]
        torch.set_num_threads(threads[name])
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    first_step_s = {}
    for config in configs:  # warm-up (oneDNN primitive creation, compilation) and FLOP count
        start = time.perf_counter()
        step(config.name)
        first_step_s[config.name] = time.perf_counter() - start
        net = steps[config.name][0]
        net.use_compiled = False  # the counter sees eager operators only
        with FlopCounterMode(display=False) as counter:
            step(config.name)
        net.use_compiled = config.compile
        flops[config.name] = counter.get_total_flops()
    for _ in range(args.rounds):
        for config in configs:
            start = time.perf_counter()
            step(config.name)
            times[config.name].append(time.perf_counter() - start)
    result = {}
    for config in configs:
        facts = peak(cpu_info(), min(threads[config.name], os.cpu_count() or 1))  # cores used
        median = statistics.median(times[config.name])
        gflops = flops[config.name] / median / 1e9
        result[config.name] = {
            "batch_size": config.batch_size or args.batch_size, "threads": threads[config.name],
            "seconds_median": median, "seconds": times[config.name],
            "first_step_s": first_step_s[config.name],
            "slices_per_s": (config.batch_size or args.batch_size) / median,
            "flops_per_step": flops[config.name], "achieved_gflops": gflops,
            "fraction_of_peak": gflops / facts["gflops"][config.precision]}
    torch.set_num_threads(args.threads)
    return result


#: the train part's rows: name -> (method, extra TrainConfig options)
TRAIN_ROWS = {"pce": ("pce", {}), "medcl": ("medcl", {}),
              "medcl_mix_first": ("medcl", {"mix_views": "first"})}


def trainer_for(method: str, args: argparse.Namespace, run_dir: Path, data=None, **options):
    """A trainer for one row; ``data`` from an earlier row is reused (every row preprocesses the
    same way: same spacing, no nonzero mask), which saves reading the volumes again."""
    from medcl.training.config import TrainConfig
    from medcl.training.data import load_training_data
    from medcl.training.trainer import Trainer

    cfg = TrainConfig(data=str(DATA), labels=str(LABELS), method=method, num_scribbled=5,
                      target_spacing=1.36719, batch_size=args.batch_size,
                      crop_size=args.crop_size, precision=args.precision,
                      channels_last=args.channels_last, compile=args.compile,
                      num_threads=args.threads, device="cpu", nonzero_mask=False, **options)
    if data is None:
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
    images = sorted((DATA / "TestSet" / "images").iterdir())[:args.volumes]
    out = run_dir / "speed_pred"
    times = []
    for image in images:
        start = time.perf_counter()
        predict_path(image, out, predictor, overwrite=True)
        times.append(time.perf_counter() - start)
    return {"volumes": len(images), "seconds_per_volume_mean": sum(times) / len(times),
            "seconds_per_volume_max": max(times),
            "peak_rss_mib": peak_rss_mib()}


def record_header(args: argparse.Namespace) -> dict:
    facts = peak(cpu_info(), os.cpu_count())
    return {"command": " ".join(["python"] + sys.argv), "commit": commit(), "machine": machine(),
            "peak_gflops": facts["gflops"], "peak_derivation": facts["derivation"],
            "matmul_gflops": {p: matmul_gflops(p) for p in ("fp32", "bf16")},
            "batch_size": args.batch_size, "crop_size": args.crop_size}


def train_part(args: argparse.Namespace, run_dir: Path, header: dict) -> dict:
    results, data = {}, None
    for row, (method, options) in TRAIN_ROWS.items():
        trainer = trainer_for(method, args, run_dir / row, data, **options)
        data = trainer.data
        result = time_steps(trainer, args.steps)
        precision = trainer.precision
        result["precision"] = precision
        result["fraction_of_peak"] = result["achieved_gflops"] / header["peak_gflops"][precision]
        result["fraction_of_matmul"] = (result["achieved_gflops"]
                                        / header["matmul_gflops"][precision])
        result["peak_rss_mib_so_far"] = peak_rss_mib()
        results[row] = result
        if row == "pce":  # a checkpoint for the inference part
            save_for_inference(trainer, run_dir)
        print(row, json.dumps(result), flush=True)
    return results


def infer_in_subprocess(args: argparse.Namespace, run_dir: Path) -> dict:
    """The inference part on the checkpoint in ``run_dir``, in a process of its own."""
    command = [sys.executable, __file__, "--part", "infer", "--run", str(run_dir),
               "--precision", args.precision, "--threads", str(args.threads)]
    if args.volumes:
        command += ["--volumes", str(args.volumes)]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_for_inference(trainer, run_dir: Path) -> None:
    """The trainer's model as the ``last`` checkpoint of ``run_dir``, with its ``config.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer.run_dir = run_dir
    trainer.save("last")
    (run_dir / "config.json").write_text(json.dumps(trainer.cfg.to_dict()))


def untrained_run(args: argparse.Namespace, run_dir: Path) -> None:
    """An untrained ``args.untrained`` model saved in ``run_dir`` for the inference part (SAM
    models with the benchmark rows' input: centre crops of ``SAM_CROP`` px)."""
    if args.untrained in SAM_MODELS:
        args = argparse.Namespace(**{**vars(args), "crop_size": SAM_CROP})
        options = {"crop_mode": "center"}
    else:
        options = {}
    trainer = trainer_for("pce", args, run_dir / "untrained", model=args.untrained, **options)
    save_for_inference(trainer, run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="train/infer parts")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="train/infer parts (default on, as in training)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (train part)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="kernel part: precision[+cl][+compile][+bN] configurations compared "
                        "in one run (default: fp32, fp32+cl, and bf16, bf16+cl where bf16 is "
                        "native)")
    parser.add_argument("--rounds", type=int, default=KERNEL_ROUNDS, help="kernel part")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=3, help="train part: timed steps")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--part", choices=("all", "kernel", "train", "infer"), default="all")
    parser.add_argument("--run", default=str(REPO / "runs" / "speed"),
                        help="scratch run folder (a checkpoint for the inference part)")
    parser.add_argument("--untrained", choices=sorted(MODEL_REGISTRY),
                        help="with --part infer: time an untrained MODEL (written to --run)")
    parser.add_argument("--volumes", type=int, default=None,
                        help="with --part infer: only the first N test volumes (default all)")
    parser.add_argument("--save", help="with --part infer: also write "
                        "benchmarks/results/speed_infer_SAVE.json (e.g. for a trained SAM run)")
    args = parser.parse_args()
    args.configs = args.configs or default_configs()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run)
    start = time.perf_counter()
    if args.part == "infer":  # separate process, so its peak memory is its own
        if args.untrained:  # written here, timed in a fresh process (no training data in it)
            untrained_run(args, run_dir)
            result = infer_in_subprocess(args, run_dir)
        else:
            result = inference(args, run_dir)
        if args.save:
            model = json.loads((run_dir / "config.json").read_text()).get("model", "unet")
            record = {"command": " ".join(["python"] + sys.argv), "commit": commit(),
                      "machine": machine(), "model": model, "precision": args.precision,
                      "untrained": bool(args.untrained),
                      "wall_seconds": time.perf_counter() - start, "inference": result}
            out = REPO / "benchmarks" / "results" / f"speed_infer_{args.save}.json"
            out.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(result))
        return
    record = record_header(args)
    if args.part in ("all", "kernel"):
        record["kernel"] = kernel(args)
        print("kernel", json.dumps({k: round(v["seconds_median"], 3)
                                    for k, v in record["kernel"].items()}), flush=True)
    if args.part in ("all", "train"):
        record.update(precision=args.precision, channels_last=args.channels_last,
                      compile=args.compile, train=train_part(args, run_dir, record))
        record["inference_unet"] = infer_in_subprocess(args, run_dir)
    record["wall_seconds"] = time.perf_counter() - start
    out = REPO / "benchmarks" / "results" / f"speed_{args.part}_{cpu_tag()}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
