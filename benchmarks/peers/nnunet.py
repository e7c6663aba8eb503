"""nnU-Net v2 with its ignore label, side by side with medcl, on the same data and test files.

Unmodified nnU-Net v2 from PyPI runs in its own venv (``make_nnunet_venv.sh``, default
``.venv-nnunet``); this script runs in medcl's venv and calls nnU-Net's command-line tools
there. Nothing of nnU-Net is imported here.

    python benchmarks/peers/nnunet.py prepare --setting few5
    python benchmarks/peers/nnunet.py row --setting few5 --plans default --minutes 30 --seed 0

``prepare`` converts MSCMR with ``medcl convert`` (nnU-Net layout, scribbles as labels, unlabelled
pixels = the ignore label) and keeps, as nnU-Net's training cases, the scribbled volumes of the
setting (few5: the 5 first sorted ids, the cases ``medcl train --num-scribbled 5`` scribbles;
the other 20 carry no label nnU-Net can use and are left out) plus the 5 validation volumes
(their dense labels; fold 0 = medcl's train/val split, so nnU-Net's pseudo-Dice watches the same
cases medcl validates on). It then plans and preprocesses the 2D configuration twice:

* ``default``: nnU-Net's own plans, unchanged;
* ``cpu``: what a knowledgeable CPU user would set (:data:`CPU_PLANS`): medcl's in-plane spacing
  and crop size, medcl's batch size, and the network depth that the patch allows.

``row`` trains fold 0 with ``nnUNetTrainerWallClock`` (``trainers/``: nnU-Net's trainer under a
wall-clock budget; its docstring lists every departure), predicts the 15 test volumes with
nnU-Net's own predictor (its defaults: mirroring test-time augmentation, Gaussian sliding window),
scores them with ``medcl evaluate`` and with nnU-Net's evaluator, and writes
``benchmarks/results/peers/nnunet_mscmr_{setting}_{plans}_seed{N}_{minutes}min.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from mscmr import LABELS, evaluate_test, git_commit, machine  # noqa: E402  (a sibling script)

from medcl.runtime.cpu import describe  # noqa: E402

log = logging.getLogger("peers.nnunet")

WORK = REPO / "runs" / "peers"
VENV = Path(os.environ.get("MEDCL_NNUNET_VENV", REPO / ".venv-nnunet"))
TRAINERS = Path(__file__).resolve().parent / "trainers"
TRAINER = "nnUNetTrainerWallClock"
CONFIGURATION = "2d"
FOLD = "0"
DATASET_IDS = {"few5": 501, "all25": 502}
SETTINGS = {"few5": 5, "all25": 25}
PLANS = {"default": "nnUNetPlans", "cpu": "nnUNetPlansCPU"}
#: the knowledgeable CPU user's changes to nnU-Net's 2D plans: medcl's MSCMR in-plane spacing
#: (benchmarks/mscmr.py --target-spacing), crop size and batch size (TrainConfig defaults)
CPU_PLANS = {"inplane_spacing_mm": 1.36719, "patch_size": 192, "batch_size": 8}
MAX_STAGES_FEATURES = 512     # nnU-Net's 2D feature cap, kept
MIN_FEATURE_MAP = 4          # nnU-Net stops pooling at feature maps of 4 pixels (2D)
RAM_CHECK_S = 1.0


def data_root() -> Path:
    return Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"


def nnunet_env(seed: int | None = None, minutes: float | None = None) -> dict:
    env = {**os.environ, "nnUNet_raw": str(WORK / "nnUNet_raw"),
           "nnUNet_preprocessed": str(WORK / "nnUNet_preprocessed"),
           "nnUNet_results": str(WORK / "nnUNet_results" / f"seed{seed}"),
           "nnUNet_extTrainer": str(TRAINERS), "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}
    if minutes is not None:
        env["MEDCL_PEER_MINUTES"] = str(minutes)
    if seed is not None:
        env["MEDCL_PEER_SEED"] = str(seed)
    return env


def nnunet(args: list[str], env: dict, log_file: Path) -> float:
    """Run one nnU-Net command in its venv, output to ``log_file``; wall seconds."""
    log.info("nnU-Net: %s (log %s)", " ".join(args), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_file.open("w") as out:
        done = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed (exit {done.returncode}); see {log_file}")
    return time.monotonic() - started


def dataset_name(setting: str) -> str:
    return f"Dataset{DATASET_IDS[setting]}_MSCMR{setting}"


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.link(src, dst)


def prepare_raw(setting: str) -> Path:
    """The nnU-Net raw dataset of ``setting``, made from ``medcl convert``'s output."""
    converted = WORK / "converted" / "MSCMR"
    if not (converted / "dataset.json").is_file():
        subprocess.run([sys.executable, "-m", "medcl", "convert", str(data_root()), str(converted),
                        "--labels", str(LABELS)], check=True)
    splits = json.loads((converted / "splits_final.json").read_text())[0]
    train = sorted(splits["train"])[:SETTINGS[setting]]
    val = sorted(splits["val"])
    raw = WORK / "nnUNet_raw" / dataset_name(setting)
    for case in train + val:
        link(converted / "imagesTr" / f"{case}_0000.nii.gz",
             raw / "imagesTr" / f"{case}_0000.nii.gz")
        link(converted / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz")
    for image in sorted((converted / "imagesTs").glob("*.nii.gz")):
        link(image, raw / "imagesTs" / image.name)
    meta = json.loads((converted / "dataset.json").read_text())
    meta.update(name=dataset_name(setting), numTraining=len(train) + len(val))
    (raw / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    split = [{"train": train, "val": val}]
    (raw / "splits_final.json").write_text(json.dumps(split, indent=2) + "\n")
    return raw


def cpu_plans(plans: dict) -> dict:
    """nnU-Net's plans with :data:`CPU_PLANS` in a 2D configuration of their own; the network
    keeps nnU-Net's rules (features double per stage up to 512, 3x3 kernels, stride 2) with as
    many stages as pool the patch down to feature maps of at least 4 pixels."""
    plans = json.loads(json.dumps(plans))
    plans["plans_name"] = PLANS["cpu"]
    cfg = plans["configurations"][CONFIGURATION]
    spacing = CPU_PLANS["inplane_spacing_mm"]
    cfg["spacing"] = [cfg["spacing"][0], spacing, spacing] if len(cfg["spacing"]) == 3 \
        else [spacing, spacing]
    size = CPU_PLANS["patch_size"]
    cfg["patch_size"] = [size, size]
    cfg["batch_size"] = CPU_PLANS["batch_size"]
    cfg["data_identifier"] = f"{PLANS['cpu']}_{CONFIGURATION}"
    arch = cfg["architecture"]["arch_kwargs"]
    stages, side = 1, size
    while side // 2 >= MIN_FEATURE_MAP and side % 2 == 0:
        stages, side = stages + 1, side // 2
    base = arch["features_per_stage"][0]
    arch["n_stages"] = stages
    arch["features_per_stage"] = [min(base * 2 ** i, MAX_STAGES_FEATURES) for i in range(stages)]
    arch["kernel_sizes"] = [[3, 3]] * stages
    arch["strides"] = [[1, 1]] + [[2, 2]] * (stages - 1)
    arch["n_conv_per_stage"] = arch["n_conv_per_stage"][:1] * stages
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][:1] * (stages - 1)
    return plans


def prepare(args: argparse.Namespace) -> None:
    prepare_raw(args.setting)
    env = nnunet_env()
    number = str(DATASET_IDS[args.setting])
    logs = WORK / "logs"
    nnunet(["nnUNetv2_plan_and_preprocess", "-d", number, "-c", CONFIGURATION, "-np", "2",
            "--verify_dataset_integrity"], env, logs / f"plan_{args.setting}.log")
    pre = WORK / "nnUNet_preprocessed" / dataset_name(args.setting)
    plans = json.loads((pre / f"{PLANS['default']}.json").read_text())
    (pre / f"{PLANS['cpu']}.json").write_text(json.dumps(cpu_plans(plans), indent=2) + "\n")
    nnunet(["nnUNetv2_preprocess", "-d", number, "-plans_name", PLANS["cpu"], "-c",
            CONFIGURATION, "-np", "2"], env, logs / f"preprocess_cpu_{args.setting}.log")
    for name in PLANS.values():
        cfg = json.loads((pre / f"{name}.json").read_text())["configurations"][CONFIGURATION]
        log.info("%s: spacing %s, patch %s, batch %s, %d stages %s", name, cfg["spacing"],
                 cfg["patch_size"], cfg["batch_size"],
                 cfg["architecture"]["arch_kwargs"]["n_stages"],
                 cfg["architecture"]["arch_kwargs"]["features_per_stage"])


def train_log_facts(results: Path) -> dict:
    """Epochs and iterations from the trainer's log line, and nnU-Net's last pseudo-Dice."""
    text = "\n".join(p.read_text() for p in sorted(results.glob("training_log_*.txt")))
    facts = {}
    for line in text.splitlines():
        if "wall-clock budget spent" in line:
            words = line.split("budget spent:")[1].split(",")
            facts["iterations"] = int(words[0].split()[0])
            facts["epochs"] = int(words[1].split()[0])
            facts["train_elapsed_s"] = float(words[2].split()[0])
        if "Pseudo dice" in line:
            facts["last_pseudo_dice"] = line.split("Pseudo dice")[1].strip()
    return facts


def nnunet_evaluate(pred_dir: Path, setting: str, plans: str, env: dict) -> dict:
    """nnU-Net's own evaluator on the same predictions (labels in class indices, labelsTs of
    ``medcl convert``)."""
    gt = WORK / "converted" / "MSCMR" / "labelsTs"
    out = pred_dir / "summary_nnunet.json"
    pre = WORK / "nnUNet_preprocessed" / dataset_name(setting)
    nnunet(["nnUNetv2_evaluate_folder", str(gt), str(pred_dir), "-djfile",
            str(pre / "dataset.json"), "-pfile", str(pre / f"{PLANS[plans]}.json"), "-o",
            str(out), "-np", "2"], env, pred_dir.with_suffix(".evaluate.log"))
    summary = json.loads(out.read_text())
    return {"per_class_dice": {k: round(v["Dice"], 4)
                               for k, v in summary["mean"].items()},
            "foreground_mean_dice": round(summary["foreground_mean"]["Dice"], 4)}


def row(args: argparse.Namespace) -> dict:
    name = f"nnunet_mscmr_{args.setting}_{args.plans}_seed{args.seed}_{args.minutes:g}min"
    env = nnunet_env(args.seed, args.minutes)
    results = (Path(env["nnUNet_results"]) / dataset_name(args.setting)
               / f"{TRAINER}__{PLANS[args.plans]}__{CONFIGURATION}" / f"fold_{FOLD}")
    logs = WORK / "logs"
    if results.exists() and not (results / "checkpoint_final.pth").is_file():
        raise SystemExit(f"{results}: an unfinished run of this row; remove it to start again")
    train_wall = None
    if not (results / "checkpoint_final.pth").is_file():
        train_wall = nnunet(["nnUNetv2_train", str(DATASET_IDS[args.setting]), CONFIGURATION, FOLD,
                             "-tr", TRAINER, "-p", PLANS[args.plans], "-device", "cpu"],
                            env, logs / f"{name}_train.log")
    peak_train = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
                  if train_wall else None)  # measured only where this process trained
    pred_dir = WORK / "predictions" / name
    if args.evaluate_only:  # the predictions of an earlier call whose evaluation failed
        predict_wall = args.predict_wall_s
    else:
        if pred_dir.exists():
            shutil.rmtree(pred_dir)  # our own output folder of this row, inside runs/peers
        images = WORK / "nnUNet_raw" / dataset_name(args.setting) / "imagesTs"
        predict_wall = nnunet(["nnUNetv2_predict", "-i", str(images), "-o", str(pred_dir), "-d",
                               str(DATASET_IDS[args.setting]), "-c", CONFIGURATION, "-f", FOLD,
                               "-tr", TRAINER, "-p", PLANS[args.plans], "-chk",
                               "checkpoint_final.pth", "-device", "cpu"],
                              env, logs / f"{name}_predict.log")
    medcl_summary = evaluate_test(data_root(), pred_dir, args.hd95)
    n_cases = len(medcl_summary["cases"])
    pre = WORK / "nnUNet_preprocessed" / dataset_name(args.setting)
    cfg = json.loads((pre / f"{PLANS[args.plans]}.json").read_text())["configurations"][
        CONFIGURATION]
    return {"name": name, "tool": "nnU-Net v2 " + nnunet_version(), "setting": args.setting,
            "num_scribbled": SETTINGS[args.setting], "plans": args.plans,
            "plans_2d": {k: cfg[k] for k in ("spacing", "patch_size", "batch_size")}
            | {"features_per_stage": cfg["architecture"]["arch_kwargs"]["features_per_stage"]},
            "budget_minutes": args.minutes, "seed": args.seed,
            "train_wall_s": round(train_wall, 1) if train_wall else None,
            **train_log_facts(results),
            "peak_rss_gib_largest_process": round(peak_train, 2) if peak_train else None,
            "test_predict_wall_s": round(predict_wall, 1),
            "test_predict_s_per_volume": round(predict_wall / n_cases, 2),
            "hd95_convention": medcl_summary["hd95_convention"],
            "test_mean": medcl_summary["mean"], "test_std": medcl_summary["std"],
            "test_mean_foreground_dice": medcl_summary["mean_foreground_dice"],
            "nnunet_evaluator": nnunet_evaluate(pred_dir, args.setting, args.plans, env)}


def nnunet_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('nnunetv2'), "
                          "m.version('torch'))"], capture_output=True, text=True, check=True)
    nnunet_v, torch_v = out.stdout.split()
    return f"{nnunet_v} (torch {torch_v})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--setting", choices=list(SETTINGS), default="few5")
    r = sub.add_parser("row")
    r.add_argument("--setting", choices=list(SETTINGS), default="few5")
    r.add_argument("--plans", choices=list(PLANS), default="default")
    r.add_argument("--minutes", type=float, default=30.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--hd95", default="medpy")
    r.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "peers"))
    r.add_argument("--evaluate-only", action="store_true",
                   help="score the predictions already written (the row's training and "
                        "prediction finished, its evaluation did not)")
    r.add_argument("--predict-wall-s", type=float,
                   help="with --evaluate-only: the prediction's wall time, read from its log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (VENV / ".installed").is_file():
        raise SystemExit(f"{VENV}: no nnU-Net venv; build it with "
                         "bash benchmarks/peers/make_nnunet_venv.sh")
    if args.command == "row" and args.evaluate_only and args.predict_wall_s is None:
        parser.error("--evaluate-only needs --predict-wall-s")
    if args.command == "prepare":
        prepare(args)
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    record = {"command": " ".join(["python"] + sys.argv), "commit": git_commit(),
              "threads": os.cpu_count(), "machine": machine("cpu"), "cpu": describe(),
              "started": started, **row(args)}
    out = Path(args.results) / f"{record['name']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record.get(k) for k in ("name", "epochs", "iterations",
                                                 "test_mean_foreground_dice")}))


if __name__ == "__main__":
    main()
