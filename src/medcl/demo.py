"""The embedded default job: generate data, train, predict and evaluate, in a few minutes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from medcl.data.datasets import discover
from medcl.data.synthetic import generate_dataset
from medcl.errors import ConfigError, DataError
from medcl.evaluation.evaluate import evaluate_folders
from medcl.files import check_writable, paths_overlap
from medcl.inference.predictor import Predictor, predict_path
from medcl.ownership import OutputFolder
from medcl.training.config import TrainConfig
from medcl.training.run import train

log = logging.getLogger(__name__)

#: sub-folders a demo writes into its output folder (and ``--overwrite`` clears of its files).
DEMO_PARTS = ("data", "run", "predictions", "evaluation")
#: training options for the generated data (96 x 96 px slices): small crops, frequent validation.
SYNTHETIC_TRAINING = {"crop_size": 96, "batch_size": 8, "val_interval": 100, "lr": 2e-3,
                      "iterations": 100_000}
OVERLAY_SLICES = 2


def _prepare_out(out: Path, overwrite: bool, inputs: list[Path], parts: tuple[str, ...]) -> None:
    """Make room for ``parts`` in ``out``. Only sub-folders an earlier demo recorded as its own
    (in ``out``'s record, :mod:`medcl.ownership`) are cleared, and of them only the files medcl
    recorded there; never a sub-folder that is, holds or lies inside an input (``--data``,
    ``--labels``). Anything else stays, named in a warning.

    Raises:
        DataError: a sub-folder is in the way that medcl did not create, or ``overwrite`` is off.
    """
    record = OutputFolder(out, "demo")
    taken = [out / p for p in DEMO_PARTS if (out / p).exists() or (out / p).is_symlink()]
    mine = []
    for path in taken:
        if any(paths_overlap(path, i) for i in inputs):
            if path.name in parts:
                raise DataError(f"{path}: holds an input of this demo; choose another --out")
            continue  # the user's --data inside --out, not a part this demo writes
        if not record.owns(path) or path.is_symlink():
            raise DataError(f"{path}: exists and was not written by medcl demo; it is never "
                            "removed: choose another --out")
        if not overwrite:
            raise DataError(f"{path}: an earlier demo is here; pass --overwrite or another --out")
        mine.append(path)
    for path in mine:
        OutputFolder(path, "demo").release()
    check_writable(out)
    record.record([out / p for p in parts])


def run_demo(out_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
             labels: str | os.PathLike | None = None, minutes: float = 2.0, device: str = "auto",
             overwrite: bool = False, callback: Callable[[dict], None] | None = None) -> dict:
    """Train on generated (or the given) data for ``minutes``, predict the test split, evaluate.

    Predictions keep the largest connected component of each class (``--largest-component`` of
    ``medcl predict``).

    Returns the evaluation summary (see :func:`medcl.evaluation.evaluate_folders`).
    """
    if not minutes > 0:
        raise ConfigError(f"minutes must be > 0, got {minutes}")
    out = Path(out_dir)
    inputs = [Path(p) for p in (data, labels) if p is not None]
    parts = DEMO_PARTS if data is None else tuple(p for p in DEMO_PARTS if p != "data")
    _prepare_out(out, overwrite, inputs, parts)
    extra = {}
    if data is None:
        data = generate_dataset(out / "data", seed=0, overwrite=True)
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
