"""The data of a training run: every training and validation case preprocessed, in memory."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from medcl.data.datasets import Dataset, discover
from medcl.data.geometry import GeometryNotes, read_image
from medcl.data.io import nifti_spacing
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig, has_zero_filled_borders
from medcl.data.slice_cache import spill_to_disk
from medcl.data.slices import PreparedCase, load_case, select_scribbled
from medcl.errors import DataError
from medcl.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Preprocessed training and validation cases and the dataset's label definition."""

    spec: LabelSpec
    train: list[PreparedCase]
    val: list[PreparedCase]
    preprocess: PreprocessConfig


def median_inplane_spacing(dataset: Dataset) -> float:
    """Median in-plane voxel size (mm) of the training images, from their headers only."""
    sizes = []
    for case in dataset.cases("train"):
        sizes.extend(nifti_spacing(case.image_paths[0])[:2])
    return statistics.median(sizes)


#: training images read to decide whether the dataset has zero-filled acquisition borders
ZERO_FILL_SAMPLE = 5


def detect_zero_filling(dataset: Dataset, geometry: str = "auto") -> bool:
    """Whether the dataset's training images have zero-filled acquisition borders (read from the
    first :data:`ZERO_FILL_SAMPLE` training images, sorted by case id)."""
    cases = dataset.cases("train")[:ZERO_FILL_SAMPLE]
    found, fractions = has_zero_filled_borders([read_image(c.image_paths, mode=geometry).data
                                                for c in cases])
    log.info("zero-filled share of %d training images: %s -> nonzero mask %s", len(cases),
             ", ".join(f"{f:.2f}" for f in fractions), "on" if found else "off")
    return found


def preprocess_config(cfg: TrainConfig, spec: LabelSpec) -> PreprocessConfig:
    """The preprocessing of ``cfg`` (``target_spacing`` and ``nonzero_mask`` resolved)."""
    return PreprocessConfig(target_spacing=cfg.target_spacing, normalization=cfg.normalization,
                            nonzero_mask=cfg.nonzero_mask, windows=spec.channel_windows())


def load_validation_cases(dataset: Dataset, preprocess: PreprocessConfig, geometry: str,
                          notes: GeometryNotes | None = None) -> list[PreparedCase]:
    """The labelled validation cases of ``dataset``, preprocessed, with their dense labels."""
    return [load_case(c, dataset.spec, preprocess, keep_dense=True, geometry=geometry,
                      notes=notes) for c in dataset.cases("val") if c.label_path is not None]


def load_run_validation(cfg: TrainConfig) -> list[PreparedCase]:
    """The validation cases of a finished run, from its resolved configuration ``cfg``."""
    dataset = discover(cfg.data, cfg.labels, train_labels=cfg.train_labels)
    notes = GeometryNotes()
    cases = load_validation_cases(dataset, preprocess_config(cfg, dataset.spec), cfg.geometry,
                                  notes)
    notes.warn(str(dataset.root))
    return cases


def load_training_data(cfg: TrainConfig, *, cache_dir: Path | None = None
                       ) -> tuple[TrainingData, TrainConfig]:
    """Discover and preprocess the data; returns it and ``cfg`` with ``target_spacing`` and
    ``nonzero_mask`` resolved. With ``cache_dir`` the training slices are kept on disk there,
    memory-mapped (:mod:`medcl.data.slice_cache`)."""
    dataset = discover(cfg.data, cfg.labels, train_labels=cfg.train_labels)
    if cfg.target_spacing is None:
        cfg = replace(cfg, target_spacing=round(median_inplane_spacing(dataset), 5))
        log.info("target spacing: median of the training images, %.5f mm", cfg.target_spacing)
    if cfg.nonzero_mask is None:
        cfg = replace(cfg, nonzero_mask=detect_zero_filling(dataset, cfg.geometry))
    spec = dataset.spec
    preprocess = preprocess_config(cfg, spec)
    scribbled = select_scribbled(dataset.cases("train"), num_scribbled=cfg.num_scribbled,
                                 scribbled_cases=cfg.scribbled_cases)
    notes = GeometryNotes()
    train_cases = []
    for case in dataset.cases("train"):  # one full-resolution volume in memory at a time
        prepared = load_case(case, spec, preprocess, labelled=case.case_id in scribbled,
                             geometry=cfg.geometry, notes=notes)
        train_cases.append(spill_to_disk(prepared, cache_dir) if cache_dir else prepared)
    missing = [c.image_paths[0] for c in dataset.cases("train") if c.label_path is None]
    if missing:
        raise DataError(f"{missing[0]}: training case without a label file")
    val_cases = load_validation_cases(dataset, preprocess, cfg.geometry, notes)
    notes.warn(str(dataset.root))
    if not val_cases:
        log.warning("no labelled validation split: the best checkpoint will be the last one")
    log.info("training cases: %d scribbled, %d unlabelled; validation cases: %d",
             sum(c.labelled for c in train_cases),
             sum(not c.labelled for c in train_cases), len(val_cases))
    return TrainingData(spec, train_cases, val_cases, preprocess), cfg
