"""The embedded default job: generate data, train, predict and evaluate, in a few minutes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from medcl.data.datasets import discover
from medcl.data.synthetic import generate_dataset
from medcl.errors import DataError
from medcl.evaluation.evaluate import evaluate_folders
from medcl.inference.predictor import Predictor, predict_path
from medcl.training.config import TrainConfig
from medcl.training.run import train

log = logging.getLogger(__name__)

#: sub-folders a demo writes into its output folder (and ``--overwrite`` replaces).
DEMO_PARTS = ("data", "run", "predictions", "evaluation")
#: training options for the generated data (96 x 96 px slices): small crops, frequent validation.
SYNTHETIC_TRAINING = {"crop_size": 96, "batch_size": 8, "val_interval": 100, "lr": 2e-3,
                      "iterations": 100_000}
OVERLAY_SLICES = 2


def _prepare_out(out: Path, overwrite: bool) -> None:
    taken = [out / p for p in DEMO_PARTS if (out / p).exists()]
    if taken and not overwrite:
        raise DataError(f"{taken[0]}: an earlier demo is here; pass --overwrite or another --out")
    for path in taken:
        shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)


def run_demo(out_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
             labels: str | os.PathLike | None = None, minutes: float = 2.0, device: str = "auto",
             overwrite: bool = False, callback: Callable[[dict], None] | None = None) -> dict:
    """Train on generated (or the given) data for ``minutes``, predict the test split, evaluate.

    Predictions keep the largest connected component of each class (``--largest-component`` of
    ``medcl predict``).

    Returns the evaluation summary (see :func:`medcl.evaluation.evaluate_folders`).
    """
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    extra = {}
    if data is None:
        data = generate_dataset(out / "data", seed=0)
        extra = dict(SYNTHETIC_TRAINING)
        log.info("generated a synthetic dataset in %s", data)
    else:
        extra = {"iterations": 100_000}
    cfg = TrainConfig(data=str(data), labels=str(labels) if labels else None,
                      max_minutes=minutes, device=device, **extra)
    train(cfg, out / "run", callback=callback)
    dataset = discover(data, labels)
    split = "test" if dataset.cases("test") else "val"
    cases = [c for c in dataset.cases(split) if c.label_path is not None]
    if not cases:
        raise DataError(f"{data}: no labelled test or validation split to evaluate on")
    image_dir, label_dir = cases[0].image_paths[0].parent, cases[0].label_path.parent
    predictor = Predictor.from_run(out / "run", device=device)
    predict_path(image_dir, out / "predictions", predictor, largest_component=True)
    spec = dataset.spec
    values = dict(zip(spec.foreground_names, spec.label_values[1:]))
    return evaluate_folders(label_dir, out / "predictions", class_values=values,
                            out_dir=out / "evaluation", image_dir=image_dir,
                            overlay_dir=out / "evaluation" / "overlays",
                            num_overlay_slices=OVERLAY_SLICES)
