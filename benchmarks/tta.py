"""Flip test-time augmentation on finished MSCMR runs: does averaging the probabilities over the
horizontal, vertical and both flips (``Predictor(flip_tta=True)``, ``medcl predict --tta``) pay?

    python benchmarks/tta.py RUN_DIR [RUN_DIR ...]

For each run's best checkpoint: the 5 validation volumes are predicted without and with the
flips, and the post-processing is chosen on each (as after training,
:func:`medcl.training.postprocessing_choice.choose_postprocessing`; the run's own
``postprocessing.json`` is left alone). Validation alone says whether the flips pay; the 15 test
volumes are then predicted with the flips (raw and with the post-processing chosen for them) and
evaluated, to compare with the run's committed record (``benchmarks/results/<run name>.json``,
which holds the test numbers without the flips). Writes
``benchmarks/results/tta_<run name>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from medcl.inference.postprocessing import Postprocessing
from medcl.inference.predictor import Predictor, predict_path
from medcl.runtime.cpu import describe
from medcl.training.config import TrainConfig
from medcl.training.data import load_run_validation
from medcl.training.postprocessing_choice import choose_postprocessing
from medcl.training.run_folder import CONFIG_NAME

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from mscmr import evaluate_test, git_commit, machine  # noqa: E402  (a sibling script)

DATA = Path(os.environ.get("MEDCL_DATA", REPO.parent / "shared" / "data")) / "MSCMR_dataset"


def validation_choice(predictor: Predictor, cases) -> dict:
    """Predict the validation ``cases`` with ``predictor`` (no post-processing); the
    post-processing chosen on them and the validation scores behind it."""
    predictions = {c.case_id: predictor.label_volume(c.reference, slices=c.image) for c in cases}
    references = {c.case_id: c.dense_labels for c in cases}
    choice, scores = choose_postprocessing(predictions, references, predictor.spec)
    return {"choice": choice, "scores": {k: round(v, 4) for k, v in scores.items()},
            "described": choice.describe(predictor.spec.class_names)}


def test_scores(run_dir: Path, predictor: Predictor, choice: Postprocessing, folder: str) -> dict:
    """Predict the test volumes with ``predictor`` and ``choice`` into ``run_dir/folder``; the
    evaluation summary."""
    predictor.postprocessing = choice
    predict_path(DATA / "TestSet" / "images", run_dir / folder, predictor, overwrite=True)
    return evaluate_test(DATA, run_dir / folder)


def one_run(run_dir: Path) -> dict:
    started = time.monotonic()
    cases = load_run_validation(TrainConfig.from_file(run_dir / CONFIG_NAME))
    plain, flips = (Predictor.from_run(run_dir, device="cpu", postprocessing="none",
                                       flip_tta=tta) for tta in (False, True))
    without, flipped = validation_choice(plain, cases), validation_choice(flips, cases)
    raw = test_scores(run_dir, flips, Postprocessing(), "test_pred_tta_raw")
    post = test_scores(run_dir, flips, flipped["choice"], "test_pred_tta")
    record_path = REPO / "benchmarks" / "results" / f"{run_dir.name}.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return {
        "run": run_dir.name, "commit": git_commit(), "machine": machine("cpu"),
        "cpu": describe(), "threads": torch.get_num_threads(),
        "val_without_flips": without["scores"], "val_postprocessing_without_flips":
            without["described"],
        "val_with_flips": flipped["scores"], "val_postprocessing_with_flips":
            flipped["described"],
        "test_with_flips_mean_foreground_dice": post["mean_foreground_dice"],
        "test_with_flips_mean": post["mean"],
        "test_with_flips_raw_mean_foreground_dice": raw["mean_foreground_dice"],
        "test_with_flips_raw_mean": raw["mean"],
        "record_test_mean_foreground_dice": record.get("test_mean_foreground_dice"),
        "record_test_raw_mean_foreground_dice": record.get("test_raw_mean_foreground_dice"),
        "wall_s": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    for run_dir in map(Path, args.run_dirs):
        result = {"command": " ".join(["python"] + sys.argv), **one_run(run_dir)}
        out = REPO / "benchmarks" / "results" / f"tta_{run_dir.name}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: result[k] for k in (
            "run", "record_test_mean_foreground_dice", "test_with_flips_mean_foreground_dice",
            "record_test_raw_mean_foreground_dice", "test_with_flips_raw_mean_foreground_dice")}
            | {"val": (result["val_without_flips"]["raw"], result["val_with_flips"]["raw"],
                       result["val_without_flips"]["chosen"],
                       result["val_with_flips"]["chosen"])}))


if __name__ == "__main__":
    main()
