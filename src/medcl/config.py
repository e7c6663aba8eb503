"""The training configuration: one typed dataclass whose field names are the CLI flags
(``--batch-size`` for ``batch_size``) and the keys of the run's saved ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

SUPERVISIONS = ("scribble", "dense")
LR_SCHEDULES = ("poly", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a training run needs; validated on construction."""

    # data
    data: str = _opt("", "dataset folder (MSCMR or nnU-Net layout)")
    labels: str | None = _opt(None, "label definition JSON (default: DATA/dataset.json)")
    num_scribbled: int | None = _opt(None, "keep scribbles of the first N training cases "
                                     "(sorted ids); the rest are unlabelled with class tags")
    scribbled_cases: list[str] | None = _opt(None, "explicit case ids whose scribbles are kept")
    supervision: str = _opt("scribble", "scribble: partial CE on labelled pixels; dense: CE "
                            "(+ Dice with --dice-weight) on dense labels, the upper bound",
                            choices=SUPERVISIONS)
    target_spacing: float | None = _opt(None, "in-plane spacing in mm to resample to "
                                        "(default: median of the training cases)")
    normalization: str = _opt("zscore", "per-volume intensity normalisation",
                              choices=("zscore", "minmax", "none"))
    crop_size: int = _opt(192, "square training crop size in pixels")
    # augmentation
    rotate_degrees: float = _opt(15.0, "max random rotation in degrees")
    scale_min: float = _opt(0.85, "min random isotropic scale")
    scale_max: float = _opt(1.15, "max random isotropic scale")
    flip_prob: float = _opt(0.5, "probability of each flip")
    rot90: bool = _opt(True, "random multiples of 90 degree rotation")
    # model
    model: str = _opt("unet", "model name from the registry")
    widths: list[int] | None = _opt(None, "UNet channel widths per level (default: the model's)")
    norm: str = _opt("batch", "normalisation layer", choices=("batch", "instance", "group", "none"))
    dropout: float = _opt(0.0, "Dropout2d probability inside every UNet conv block")
    # losses
    dice_weight: float = _opt(0.0, "weight of a Dice term on labelled pixels (scribble) or all "
                              "pixels (dense)")
    # optimisation
    batch_size: int = _opt(8, "slices per batch")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = _opt(1e-4, "AdamW weight decay")
    lr_schedule: str = _opt("poly", "learning-rate decay", choices=LR_SCHEDULES)
    warmup_steps: int = _opt(50, "linear warm-up steps")
    iterations: int = _opt(4000, "number of training steps")
    max_minutes: float | None = _opt(None, "wall-clock budget in minutes (training stops and "
                                     "the LR schedule ends at whichever comes first)")
    # run control
    val_interval: int = _opt(200, "steps between validations (0: only at the end)")
    log_interval: int = _opt(10, "steps between metric log lines")
    seed: int = _opt(42, "random seed")
    device: str = _opt("auto", "device", choices=DEVICES)
    num_threads: int | None = _opt(None, "CPU threads for torch (default: torch's choice)")
    infer_batch_size: int = _opt(16, "slices per forward pass at validation/inference")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not valid; choose from {', '.join(choices)}")
        positive = ("crop_size", "batch_size", "iterations", "log_interval", "infer_batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.val_interval < 0 or self.warmup_steps < 0:
            raise ConfigError("val_interval and warmup_steps must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"max_minutes must be > 0, got {self.max_minutes}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not 0 <= self.flip_prob <= 1 or not 0 <= self.dropout < 1:
            raise ConfigError("flip_prob must be in [0, 1] and dropout in [0, 1)")
        if self.num_scribbled is not None and self.scribbled_cases:
            raise ConfigError("give num_scribbled or scribbled_cases, not both")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "configuration") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read configuration ({exc})") from None
        return cls.from_dict(data, source=str(path))


def field_type(f: dataclasses.Field) -> tuple[type, bool, bool]:
    """``(base type, optional, is_list)`` of a config field, for building CLI flags."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    optional = False
    args = typing.get_args(hint)
    if type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False
