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

from medcl.data.datasets import TRAIN_LABELS
from medcl.data.geometry import GEOMETRY_MODES
from medcl.data.slice_cache import SLICE_CACHES
from medcl.errors import ConfigError
from medcl.inference.postprocessing import POSTPROCESSING_MODES
from medcl.method.clustering import (
    CLUSTERINGS,
    CODE_DIM,
    HEAD_FORM,
    HEAD_FORMS,
    HEAD_GRID,
    HEAD_HIDDEN,
    MIN_PROTOTYPES,
    NUM_PROTOTYPES,
    TEMPERATURE,
)
from medcl.method.mixing import MAX_ANGLE
from medcl.method.objectives import MIX_FORWARDS, MIX_VIEWS, SUPERVISIONS
from medcl.models.registry import MODEL_REGISTRY, input_size_divisor
from medcl.runtime.precision import PRECISION_CHOICES
from medcl.runtime.rng import MAX_SEED
from medcl.training.ranges import (
    AT_LEAST_ONE,
    BELOW_ONE,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SHARE,
    Interval,
    check_field_value,
)
from medcl.training.schedule import LR_SCHEDULES

METHODS = ("pce", "mix", "cluster", "mix_cluster", "medcl", "recommended")
DEVICES = ("auto", "cpu", "cuda")
#: options that bound a range together: the first may not exceed the second
BOUND_PAIRS = (("scale_min", "scale_max"), ("intra_box_min", "intra_box_max"))
#: what selects best.pt (docs/training.md): the validation score after the post-processing
#: chosen on it (what predict writes), or the raw argmax's
SELECTION_RULES = ("post", "raw")
#: the section of a run's config.json that records what the machine decided at run time (the
#: precision ``auto`` chose, and why); informative, ignored when the file is read back
RESOLVED_KEY = "resolved"


_NO_MEDCL = {"mix_pce_weight": 0.0, "mix_consistency_weight": 0.0, "existence_weight": 0.0,
             "global_weight": 0.0, "local_weight": 0.0, "prompt_consistency_weight": 0.0,
             "intra_mix": False}
_MIX = {"mix_pce_weight": 1.0, "mix_consistency_weight": 1.0, "intra_mix": True}
_CLUSTER = {"global_weight": 1.0, "local_weight": 1.0, "prompt_consistency_weight": 1.0}
_MEDCL = {**_MIX, **_CLUSTER, "existence_weight": 1.0, "dice_weight": 1.0,
          "labelled_fraction": 0.5}
_PAPER = {"supervised_warmup": 0.0, "nonzero_mask": False}
#: what each --method sets for the options left unset (None); docs/method.md explains the rows.
METHOD_PRESETS: dict[str, dict] = {
    "pce": {**_PAPER, **_NO_MEDCL, "dice_weight": 0.0, "labelled_fraction": 1.0},
    "mix": {**_PAPER, **_NO_MEDCL, **_MIX, "dice_weight": 0.0, "labelled_fraction": 0.5},
    "cluster": {**_PAPER, **_NO_MEDCL, **_CLUSTER, "dice_weight": 0.0, "labelled_fraction": 0.5},
    "mix_cluster": {**_PAPER, **_NO_MEDCL, **_MIX, **_CLUSTER, "dice_weight": 0.0,
                    "labelled_fraction": 0.5},
    "medcl": {**_PAPER, **_MEDCL},
    # the recipe that did best on few-scribble MSCMR *validation* (docs/results.md): MedCL after
    # a supervised warm-up of 30 % of the budget; nonzero_mask stays None, so the zero filling
    # around the acquisition is detected from the training images (training/data.py)
    "recommended": {**_MEDCL, "supervised_warmup": 0.3},
}


def _opt(default, help: str, **kw):
    """A field with its ``--help`` text; ``choices`` (the valid values) or ``valid`` (an
    :class:`Interval`) are checked on construction."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a training run needs; validated on construction."""

    # data
    data: str = _opt("", "dataset folder (MSCMR or nnU-Net layout)")
    labels: str | None = _opt(None, "label definition JSON (default: DATA/dataset.json)")
    num_scribbled: int | None = _opt(None, "keep scribbles of the first N training cases "
                                     "(sorted ids); the rest are unlabelled with class tags",
                                     valid=AT_LEAST_ONE)
    scribbled_cases: list[str] | None = _opt(None, "explicit case ids whose scribbles are kept")
    geometry: str = _opt("auto", "header geometry policy (docs/data.md): auto puts files with no "
                         "or self-inconsistent geometry on the image's grid and stops on a real "
                         "conflict; image accepts the image's geometry for every file of its "
                         "shape; strict stops on any difference",
                         choices=GEOMETRY_MODES)
    train_labels: str = _opt("labels", "training label files of a described layout: labels "
                             "(the scribbles) or dense_labels (the fully supervised upper bound, "
                             "with --supervision dense)", choices=TRAIN_LABELS)
    supervision: str = _opt("scribble", "scribble: partial CE on labelled pixels; dense: CE "
                            "(+ Dice with --dice-weight) on dense labels, the upper bound",
                            choices=SUPERVISIONS)
    target_spacing: float | None = _opt(None, "in-plane spacing in mm to resample to "
                                        "(default: median of the training cases)", valid=POSITIVE)
    normalization: str = _opt("zscore", "per-volume intensity normalisation",
                              choices=("zscore", "minmax", "none"))
    nonzero_mask: bool | None = _opt(None, "the zero-filled region outside the acquired field "
                                     "of view is background: excluded from normalisation, "
                                     "labelled background in training, predicted background "
                                     "(default: off for the paper's presets; detected from the "
                                     "training images for --method recommended)")
    crop_size: int = _opt(192, "square training crop size in pixels", valid=POSITIVE)
    slice_cache: str = _opt("memory", "where the preprocessed training slices live: memory, or "
                            "disk (written to RUN/slices, memory-mapped, removed after training: "
                            "for training sets larger than the memory, e.g. abdominal CT)",
                            choices=SLICE_CACHES)
    class_balance: float = _opt(0.0, "share of the labelled training draws that pick a "
                                "foreground class uniformly and crop around one of its pixels "
                                "(for many classes of very different sizes, e.g. 0.5 for "
                                "abdominal CT); 0: slices drawn uniformly", valid=PROBABILITY)
    # augmentation
    rotate_degrees: float = _opt(15.0, "max random rotation in degrees", valid=NON_NEGATIVE)
    scale_min: float = _opt(0.85, "min random isotropic scale", valid=POSITIVE)
    scale_max: float = _opt(1.15, "max random isotropic scale", valid=POSITIVE)
    flip_prob: float = _opt(0.5, "probability of each flip", valid=PROBABILITY)
    rot90: bool = _opt(True, "random multiples of 90 degree rotation")
    # model
    model: str = _opt("unet", "model from the registry (UNets; SAM-family segmenters with "
                      "learned class prompts, docs/sam.md)", choices=tuple(MODEL_REGISTRY))
    widths: list[int] | None = _opt(None, "UNet channel widths per level (default: the model's)",
                                    valid=AT_LEAST_ONE)
    norm: str = _opt("batch", "normalisation layer", choices=("batch", "instance", "group", "none"))
    dropout: float = _opt(0.0, "Dropout2d probability inside every UNet conv block",
                          valid=BELOW_ONE)
    sam_checkpoint: str | None = _opt("auto", "SAM models: weights file in the SAM/MedSAM "
                                      "format, auto (the installed LiteMedSAM weights) or none")
    sam_encoder: str = _opt("frozen", "SAM models: frozen (embeddings cached), partial (last "
                            "stage + neck train) or full image encoder",
                            choices=("frozen", "partial", "full"))
    sam_prompt_tokens: int = _opt(2, "SAM models: learned tokens per class prompt",
                                  valid=AT_LEAST_ONE)
    sam_cache_size: int = _opt(2048, "SAM models: embeddings kept by the frozen encoder's cache "
                               "besides the precomputed ones (0: no cache, nothing precomputed)",
                               valid=NON_NEGATIVE)
    sam_decode: str = _opt("joint", "SAM models: joint (all prompts of an image in one decoder "
                           "pass) or per_prompt (one pass per prompt)",
                           choices=("joint", "per_prompt"))
    sam_recompute: bool = _opt(False, "SAM models: recompute the decoder's activations in the "
                               "backward pass instead of keeping them (less memory, one more "
                               "decoder forward per step)")
    sam_resize: str = _opt("shrink", "SAM models: shrink (only slices larger than the encoder "
                           "input are scaled down; the spacing is kept) or longest (every slice's "
                           "longest side to the input size, LiteMedSAM's rule)",
                           choices=("shrink", "longest"))
    crop_mode: str = _opt("random", "training crops: random position, or center (the same "
                          "input every time a slice is drawn: what the frozen SAM cache needs)",
                          choices=("random", "center"))
    mix_space: str = _opt("auto", "where MedCL mixes: image, or embedding (SAM: mix the image "
                          "embeddings, so a frozen encoder's cache keeps working); auto: "
                          "embedding for a frozen SAM encoder, image otherwise",
                          choices=("auto", "image", "embedding"))
    init_from: str | None = _opt(None, "fine-tune: start from the weights of a run folder (its "
                                 "best checkpoint), a checkpoint file or a model file written by "
                                 "medcl export (same network, classes and channels; the "
                                 "optimiser starts fresh); stored as the file read")
    init_from_sha256: str | None = _opt(None, "the sha256 of init_from's file, recorded when the "
                                        "run starts; if given, the file must match it")
    # method and losses (None: the --method preset's value, see docs/method.md)
    method: str = _opt("pce", "method preset: pce baseline, the ablation rows mix / cluster / "
                       "mix_cluster, or the full medcl", choices=METHODS)
    pce_weight: float = _opt(1.0, "weight of partial CE on the scribbled pixels",
                             valid=NON_NEGATIVE)
    dice_weight: float | None = _opt(None, "weight of a Dice term on labelled pixels (scribble) "
                                     "or all pixels (dense)", valid=NON_NEGATIVE)
    mix_pce_weight: float | None = _opt(None, "weight of partial CE on inter-mixed scribbles",
                                        valid=NON_NEGATIVE)
    mix_consistency_weight: float | None = _opt(None, "weight of the consistency between "
                                                "f(mix(x)) and mix(f(x))", valid=NON_NEGATIVE)
    existence_weight: float | None = _opt(None, "weight of the class-tag existence loss",
                                          valid=NON_NEGATIVE)
    global_weight: float | None = _opt(None, "weight of the global (batch) clustering loss",
                                       valid=NON_NEGATIVE)
    local_weight: float | None = _opt(None, "weight of the local (two-view) clustering loss",
                                      valid=NON_NEGATIVE)
    prompt_consistency_weight: float | None = _opt(
        None, "SAM models: weight of the agreement between the union prompt's mask and the sum "
        "of the single-class prompts' foreground probabilities (plus pCE of the union mask)",
        valid=NON_NEGATIVE)
    intra_mix: bool | None = _opt(None, "blend each view with a rotated copy outside a box "
                                  "(off: views are plain rotations)")
    intra_max_angle: float = _opt(30.0, "intra-mix rotation range in degrees (authors' code: 180)",
                                  valid=Interval(0, MAX_ANGLE))
    intra_box: str = _opt("roi", "intra-mix kept box: roi (scribbled foreground box, as the "
                          "paper describes) or random (authors' code)", choices=("roi", "random"))
    intra_box_min: float = _opt(0.9, "random box side, min fraction of the image side", valid=SHARE)
    intra_box_max: float = _opt(1.0, "random box side, max fraction of the image side", valid=SHARE)
    roi_margin: float = _opt(0.1, "margin added around the roi box, fraction of its size",
                             valid=NON_NEGATIVE)
    mix_beta: float = _opt(0.5, "Beta(b, b) parameter of all mixing weights", valid=POSITIVE)
    inter_partner: str = _opt("reverse", "inter-mix partner: reverse batch or a shuffle",
                              choices=("reverse", "shuffle"))
    mix_views: str = _opt("both", "which views are inter-mixed: both views of every image (2B "
                          "mixes, authors' code) or the first only (B mixes: a step forwards 3B "
                          "instead of 4B slices)", choices=MIX_VIEWS)
    mix_forward: str = _opt("joint", "views and inter-mixes in one forward pass (BatchNorm "
                            "statistics over both, authors' code) or separate passes (the "
                            "views' statistics their own)", choices=MIX_FORWARDS)
    clustering: str = _opt("contrastive", "clustering form: contrastive (global centres + "
                           "NT-Xent) or prototype (Sinkhorn prototypes)",
                           choices=CLUSTERINGS)
    head: str = _opt(HEAD_FORM, "projection head: pooled (any size) or full (authors', tied to "
                     "the crop size)", choices=HEAD_FORMS)
    head_grid: int = _opt(HEAD_GRID, "pooled head layout side", valid=AT_LEAST_ONE)
    head_hidden: int = _opt(HEAD_HIDDEN, "projection head hidden width", valid=AT_LEAST_ONE)
    code_dim: int = _opt(CODE_DIM, "anatomy code dimension", valid=AT_LEAST_ONE)
    temperature: float = _opt(TEMPERATURE, "NT-Xent temperature", valid=POSITIVE)
    num_prototypes: int = _opt(NUM_PROTOTYPES, "prototypes of the prototype clustering",
                               valid=Interval(MIN_PROTOTYPES))
    labelled_fraction: float | None = _opt(None, "share of each batch drawn from scribbled "
                                           "slices when unlabelled slices are used "
                                           "(default: 0.5 for methods that use them)", valid=SHARE)
    supervised_warmup: float | None = _opt(None, "share of training (of the wall-clock budget with "
                                    "max_minutes, else of the iterations) spent on the scribble "
                                    "loss alone (one view of scribbled slices, no mixing or "
                                    "clustering) before the other MedCL terms switch on; 0: from "
                                    "the first step, as in the paper (default: 0; 0.3 for "
                                    "--method recommended)", valid=BELOW_ONE)
    medcl_rampup: float = _opt(0.0, "share of training, from the end of the supervised warm-up, "
                               "over which the weights of the MedCL terms (all but the scribble "
                               "pCE and Dice) rise from 0 to their values along exp(-5 (1 - t)^2); "
                               "0: full weights at once, as in the paper", valid=PROBABILITY)
    # optimisation
    batch_size: int = _opt(8, "slices per batch", valid=POSITIVE)
    lr: float = _opt(1e-3, "peak learning rate (AdamW)", valid=POSITIVE)
    weight_decay: float = _opt(1e-4, "AdamW weight decay", valid=NON_NEGATIVE)
    lr_schedule: str = _opt("poly", "learning-rate decay", choices=LR_SCHEDULES)
    warmup_steps: int = _opt(50, "linear warm-up steps", valid=NON_NEGATIVE)
    iterations: int = _opt(4000, "number of training steps", valid=POSITIVE)
    ema_decay: float = _opt(0.0, "validate, select and save an exponential moving average of "
                            "the weights (training/ema.py), e.g. 0.99; 0: off (the raw weights)",
                            valid=BELOW_ONE)
    max_minutes: float | None = _opt(None, "wall-clock budget in minutes (training stops and "
                                     "the LR schedule ends at whichever comes first)",
                                     valid=POSITIVE)
    # run control
    val_interval: int = _opt(200, "steps between validations (0: only at the end)",
                             valid=NON_NEGATIVE)
    log_interval: int = _opt(10, "steps between metric log lines", valid=POSITIVE)
    seed: int = _opt(42, "random seed", valid=Interval(0, MAX_SEED))
    device: str = _opt("auto", "device", choices=DEVICES)
    num_threads: int | None = _opt(None, "CPU threads for torch (default: torch's choice)",
                                   valid=AT_LEAST_ONE)
    infer_batch_size: int = _opt(16, "slices per forward pass at validation/inference",
                                 valid=POSITIVE)
    postprocessing: str = _opt("auto", "after training, choose connected-component "
                               "post-processing on the validation cases (nnU-Net's rule: keep "
                               "what raises validation Dice; RUN/postprocessing.json, applied by "
                               "predict): auto, or none", choices=POSTPROCESSING_MODES)
    selection: str | None = _opt(None, "the validation score that picks best.pt: post (after "
                                 "the post-processing chosen on the same predictions, what "
                                 "predict writes; chosen together with RUN/postprocessing.json) "
                                 "or raw (the network's argmax); default: post, raw with "
                                 "--postprocessing none", choices=SELECTION_RULES)
    precision: str = _opt("auto", "network precision: auto (bf16 autocast where the hardware "
                          "runs bf16 natively: CPU flags avx512_bf16/amx_bf16, CUDA with bf16; "
                          "fp32 elsewhere), fp32, or bf16 (forced; emulated and slow on AVX2-only "
                          "CPUs); losses stay fp32", choices=PRECISION_CHOICES)
    channels_last: bool = _opt(True, "channels-last memory layout for the network (measured "
                               "faster or equal on every CPU tried: docs/training.md)")
    compile: bool = _opt(False, "torch.compile the network's training forward (inductor; the "
                         "first steps compile); falls back to eager with a warning")
    sync_bn: bool = _opt(False, "synchronise batch-norm statistics across torchrun processes")
    checkpoint_minutes: float = _opt(5.0, "minutes between time-based saves of last.pt, "
                                     "independent of validation (0: only at validation)",
                                     valid=NON_NEGATIVE)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is not valid; "
                              f"choose from {', '.join(METHODS)}")
        for name, value in METHOD_PRESETS[self.method].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.selection is None:
            self.selection = "post" if self.postprocessing == "auto" else "raw"
        if self.selection == "post" and self.postprocessing == "none":
            raise ConfigError("selection='post' selects on the post-processed validation score, "
                              "which needs postprocessing='auto'; with postprocessing='none' "
                              "predict writes the raw argmax: use selection='raw'")
        for f in dataclasses.fields(self):
            check_field_value(f, getattr(self, f.name))
        for low, high in BOUND_PAIRS:
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"{low} must be <= {high}, got {getattr(self, low)} > "
                                  f"{getattr(self, high)}")
        if self.supervision == "dense" and self.method != "pce":
            raise ConfigError(f"supervision='dense' only works with method='pce', "
                              f"got {self.method!r}")
        if self.medcl_rampup > 1 - self.supervised_warmup:
            raise ConfigError(f"medcl_rampup must be in [0, 1 - supervised_warmup] = "
                              f"[0, {1 - self.supervised_warmup:g}], got {self.medcl_rampup}")
        if self.init_from_sha256 and not self.init_from:
            raise ConfigError("init_from_sha256 needs init_from (the file it is the sha256 of)")
        if self.num_scribbled is not None and self.scribbled_cases:
            raise ConfigError("give num_scribbled or scribbled_cases, not both")
        self._check_crop_size()

    def _check_crop_size(self) -> None:
        """The crop must fit the model: a UNet halves its input once per level below the first."""
        divisor = input_size_divisor(self.model, widths=self.widths)
        if self.crop_size % divisor:
            below = self.crop_size // divisor * divisor
            near = " or ".join(str(n) for n in (below, below + divisor) if n > 0)
            widths = f" with widths {self.widths}" if self.widths else ""
            raise ConfigError(f"crop_size must be a multiple of {divisor} for model "
                              f"{self.model!r}{widths} (it halves its input "
                              f"{divisor.bit_length() - 1} times), got {self.crop_size}; "
                              f"e.g. {near}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str | None = None) -> "TrainConfig":
        """``data``'s options checked; errors name ``source`` (the file) when given."""
        where = source or "configuration"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object of options, got "
                              f"{type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read configuration ({exc})") from None
        if isinstance(data, dict):
            data.pop(RESOLVED_KEY, None)
        return cls.from_dict(data, source=str(path))


def _type_ok(value, base: type) -> bool:
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base)


def check_field_types(cfg: TrainConfig) -> None:
    """Every field holds its declared type (a JSON file can hold anything); ints become floats
    where a float is declared.

    Raises:
        ConfigError: naming the field, the value and the expected type.
    """
    for f in dataclasses.fields(cfg):
        base, optional, is_list = field_type(f)
        value = getattr(cfg, f.name)
        if value is None and optional:
            continue
        items = value if is_list and isinstance(value, list) else [value]
        if (is_list and not isinstance(value, list)) or not all(_type_ok(v, base) for v in items):
            expected = f"a list of {base.__name__}" if is_list else base.__name__
            raise ConfigError(f"{f.name}={value!r} is not valid; expected {expected}"
                              + (" or null" if optional else ""))
        if base is float and not is_list:
            setattr(cfg, f.name, float(value))


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
