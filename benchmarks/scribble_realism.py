"""Does the simulator's realism matter? MedCL on few-scribble MyoPS, the same 5 training cases
once with their real scribbles and once with scribbles simulated from their dense labels
(``medcl scribble`` defaults), the same budget and seed; validation Scar / Edema.

    python benchmarks/scribble_realism.py --iterations 300 --work /tmp/scribble_realism
    python benchmarks/scribble_realism.py --method recommended --minutes 30

The budget is ``--iterations`` steps, or ``--minutes`` of training wall-clock per variant when
given (the benchmarks' budget; the step count then depends on the machine, the same for both
variants only if they run alone one after another).

The simulated scribbles are written into ``WORK/dataset/sim_scribbles`` beside links to the
real MyoPS folders (``$MEDCL_DATA/MyoPS2020``, read-only). Writes
``benchmarks/results/scribble_realism[_{method}]_{iterations}steps.json`` or
``..._{minutes}min.json``. Each variant's best checkpoint is also scored on the validation
cases raw and with the post-processing the run chose on them (as ``benchmarks/myops.py`` does);
``--evaluate-only`` does that for runs already in ``WORK`` without training again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mscmr import UNLIMITED_STEPS, finished_run, git_commit, read_metrics
from myops import grouped, raw_and_postprocessed

from medcl.data.labels import LabelSpec
from medcl.data.scribble_files import named_options, scribble_folder
from medcl.inference.predictor import Predictor
from medcl.runtime.cpu import describe
from medcl.training.config import METHODS, TrainConfig
from medcl.training.run import train

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = REPO / "examples" / "myops.json"
LINKED = ("train25", "test20", "train25_myops_gd", "scribbles")
SIM_FOLDER = "sim_scribbles"
SIM_UNLABELLED = 4000  # no class of MyoPS uses it
FEW_SCRIBBLED = 5
DEFAULT_METHOD = "medcl"


def prepare(work: Path, data: Path) -> dict[str, Path]:
    """The dataset folder with the simulated scribbles, and a description for each variant."""
    dataset = work / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if not (dataset / name).exists():
            (dataset / name).symlink_to(data / name, target_is_directory=True)
    real = json.loads(DESCRIPTION.read_text())
    sim = json.loads(DESCRIPTION.read_text())
    sim["labels"]["ignore"] = SIM_UNLABELLED
    sim["label_kinds"]["sim"] = {"unlabelled": SIM_UNLABELLED, "map": {"600": "background"}}
    sim["files"]["train"].update(labels=f"{SIM_FOLDER}/{{case}}_gd.nii.gz", label_kind="sim")
    paths = {"real": work / "real.json", "simulated": work / "simulated.json"}
    paths["real"].write_text(json.dumps(real, indent=1))
    paths["simulated"].write_text(json.dumps(sim, indent=1))
    if not (dataset / SIM_FOLDER).exists():
        spec = LabelSpec.from_file(paths["simulated"])
        scribble_folder(data / "train25_myops_gd", dataset / SIM_FOLDER, spec,
                        options=named_options(spec), seed=0)
    return {"dataset": dataset, **paths}


def best_validation(run_dir: Path) -> dict:
    vals = [r for r in read_metrics(run_dir) if r["event"] == "val" and r["mean_dice"] is not None]
    best = max(vals, key=lambda r: r["mean_dice"])
    return {"best_step": best["step"], "mean_scar_edema": best["mean_dice"],
            "dice": best["dice"], "curve": [{"step": r["step"], **r["dice"]} for r in vals]}


def scored_validation(run_dir: Path, data: Path) -> dict:
    """Scar / Edema Dice and HD95 of the best checkpoint on the validation cases, raw
    (``val_raw_*``) and post-processed as the run chose on these cases (``val_*``, optimistic)."""
    raw, post = raw_and_postprocessed(run_dir, data, Predictor.from_run(run_dir, device="cpu"),
                                      "cpu")
    return {**grouped(raw, "val_raw_"), **grouped(post, "val_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--minutes", type=float,
                        help="training wall-clock budget per variant (instead of --iterations)")
    parser.add_argument("--val-interval", type=int, default=75)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(REPO / "runs" / "scribble_realism"))
    parser.add_argument("--evaluate-only", action="store_true",
                        help="score the runs already in --work instead of training them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MyoPS2020"
    work = Path(args.work)
    paths = prepare(work, data)
    record = {"command": " ".join(["python"] + sys.argv), "commit": git_commit(),
              "machine": {**describe(), "cores": os.cpu_count()}, "rows": {}}
    budget = f"{args.minutes:g}min" if args.minutes else f"{args.iterations}steps"
    name = ("" if args.method == DEFAULT_METHOD else f"_{args.method}") + f"_{budget}"
    for variant in ("real", "simulated"):
        cfg = TrainConfig(data=str(paths["dataset"]), labels=str(paths[variant]),
                          method=args.method, num_scribbled=FEW_SCRIBBLED,
                          iterations=UNLIMITED_STEPS if args.minutes else args.iterations,
                          max_minutes=args.minutes, val_interval=args.val_interval,
                          seed=args.seed, num_threads=args.threads, device="cpu")
        run_dir = work / f"run{name}_{variant}"
        if not args.evaluate_only:
            train(cfg, run_dir)
        result, seconds = finished_run(run_dir)
        record["rows"][variant] = {"steps": result["step"],
                                   "train_minutes": round(seconds / 60, 1),
                                   **best_validation(run_dir),
                                   **scored_validation(run_dir, data)}
        print(variant, json.dumps(record["rows"][variant]), flush=True)
    out = REPO / "benchmarks" / "results" / f"scribble_realism{name}.json"
    if args.evaluate_only and out.is_file():  # keep who trained the runs, and where
        trained = json.loads(out.read_text())
        record["training"] = trained.get("training") or {
            key: trained.get(key) for key in ("command", "commit", "machine")}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
