"""``medcl export``: a run folder -> a model to hand to someone.

:func:`export_run` writes the model file (``model.medcl``, :mod:`medcl.runtime.model_file`):
the selected weights without optimiser state, the resolved configuration, preprocessing, label
definition, chosen post-processing, a description of the training data (counts, spacing,
channels; never an image, a case id or a folder of the trainer's machine), the validation
scores, versions and a licence field.
:func:`export_run_onnx` writes the network as ONNX with a JSON of the preprocessing it needs.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from pathlib import Path

import torch

from medcl import __version__
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import run_preprocessing
from medcl.errors import ConfigError, DataError
from medcl.files import atomic_write_text
from medcl.inference.postprocessing import POSTPROCESSING_FILE, Postprocessing
from medcl.inference.window import inference_window
from medcl.models import SAM_MODELS, rebuild_model
from medcl.models.onnx import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME, can_export_onnx, export_onnx
from medcl.models.registry import portable_kwargs
from medcl.ownership import OutputFolder
from medcl.runtime.checkpoint import CHECKPOINT_DIR, find_checkpoint, load_checkpoint
from medcl.runtime.model_file import FORMAT_VERSION, MODEL_SUFFIX, write_model_file
from medcl.training.run_folder import CASES_NAME, PATH_KEYS, SELECTION_NAME

log = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
#: the ``format`` of the preprocessing JSON beside an exported ONNX file (``model.onnx.json``)
ONNX_SIDECAR_FORMAT = "medcl-onnx-preprocessing"
#: the licence field when ``--licence`` is not given
LICENCE_UNSET = "unspecified (set with medcl export --licence)"
DATA_LICENCE_NOTE = ("the weights were learnt from the training data: the data's licence and "
                     "terms of use apply to them")
#: the licence of the pretrained weights a model file's network started from, by model name
PRETRAINED_LICENCES = {
    "lite_medsam": "the pretrained LiteMedSAM weights (bowang-lab/MedSAM, LiteMedSAM branch) "
                   "are Apache-2.0",
    "sam_vit_b": "the network started from pretrained SAM-family ViT-B weights: their licence "
                 "applies (SAM and MedSAM are Apache-2.0)",
}
#: what each selection rule (``--selection``, the run's selection.json) chose the weights by
SELECTION_RULES = {"post": "the post-processed predictions", "raw": "the raw argmax"}
#: the selecting validation's means kept in metrics.json (``mean_dice``: the score the rule
#: selects on; ``dice``: per class, raw; ``dice_post``: per class, post-processed); no case ids
VALIDATION_KEYS = ("mean_dice", "mean_dice_raw", "mean_dice_post", "dice", "dice_post")


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """The preprocessing JSON beside an ONNX file: ``model.onnx`` -> ``model.onnx.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def check_output(paths: list[Path], *, overwrite: bool) -> OutputFolder:
    """Refuse to write ``paths`` (files in one folder) over an existing file unless
    ``overwrite``, and over a file medcl did not write whatever ``overwrite``
    (:mod:`medcl.ownership`); the folder's record, to record the files once written.

    Raises:
        DataError: naming the file and what to do.
    """
    if paths[0].is_dir():
        raise DataError(f"{paths[0]}: is a folder; give the file to write (e.g. "
                        f"model{MODEL_SUFFIX})")
    outputs = OutputFolder(paths[0].parent, "export")
    outputs.check(paths, overwrite=overwrite, hint="pass --overwrite to replace it")
    return outputs


def _load_run(run: str | os.PathLike, checkpoint: str) -> tuple[Path, Path, dict, LabelSpec]:
    """``(run folder, checkpoint file, checkpoint state, label definition)`` of ``run`` (a run
    folder or a checkpoint file in one)."""
    path = find_checkpoint(run, checkpoint)
    state = load_checkpoint(path)
    folder = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    return folder, path, state, LabelSpec.from_dict(state["label_spec"], source=str(path))


def shareable_config(cfg: dict) -> dict:
    """The run's resolved configuration as shared: paths cut to their last component (no
    folder of the trainer's machine) and the scribbled case ids left out (their count is in
    ``training_data.json``)."""
    shared = {key: Path(value).name if key in PATH_KEYS and value else value
              for key, value in cfg.items()}
    if shared.get("scribbled_cases"):
        shared["scribbled_cases"] = None
    return shared


def describe_preprocessing(cfg: dict, spec: LabelSpec, model: torch.nn.Module) -> dict:
    """How a volume ``(X, Y, Z, C)`` becomes the network's input and its logits labels."""
    preprocess = run_preprocessing(cfg, spec)
    window = inference_window(model, crop_mode=cfg.get("crop_mode", "random"),
                              crop_size=cfg["crop_size"])
    return {
        "slices": "each z-slice of the volume (X, Y, Z, C) becomes (C, H, W) with H along X "
                  "and W along Y (voxel axes of the file as stored)",
        "normalization": preprocess.normalization,
        "clip_percentiles": preprocess.clip_percentiles,
        "nonzero_mask": preprocess.nonzero_mask,
        "channel_windows": {name: list(bounds) for name, bounds in spec.windows.items()},
        "channel_names": list(spec.channel_names),
        "target_spacing_mm": preprocess.target_spacing,
        "resampling": "in-plane only, bilinear with antialiasing, to target_spacing_mm; z never "
                      "resampled; the slices are zero-padded at the bottom/right to multiples of "
                      "size_divisor; the probabilities go back to the input grid bilinearly "
                      "before the argmax",
        "size_divisor": getattr(model, "size_divisor", 1),
        "window": None if window is None else {"size": list(window.size), "crop": window.crop},
        "output": "(B, K, H, W) logits; softmax over K; argmax = class index; "
                  "labels.json's label_values[index] = the value on disk",
    }


def describe_training_data(folder: Path, cfg: dict, spec: LabelSpec) -> dict:
    """What the weights were learnt from, without an image or a case id: split sizes, spacing,
    channels and classes."""
    cases_path = folder / CASES_NAME
    cases = json.loads(cases_path.read_text()) if cases_path.is_file() else {}
    scribbled = cfg.get("num_scribbled") or len(cfg.get("scribbled_cases") or ()) or "all"
    return {"cases": {split: len(ids) for split, ids in cases.items()},
            "scribbled_training_cases": scribbled,
            "supervision": cfg.get("supervision"), "train_labels": cfg.get("train_labels"),
            "target_spacing_mm": cfg.get("target_spacing"),
            "target_spacing_note": "the median in-plane spacing of the training images unless "
                                   "the run set --target-spacing",
            "in_channels": spec.in_channels, "channel_names": list(spec.channel_names),
            "classes": list(spec.class_names), "dataset_folder": Path(cfg.get("data", "")).name}


def describe_validation(folder: Path, state: dict, postprocessing: dict, checkpoint: Path) -> dict:
    """The validation scores that selected the weights (means only, no case ids)."""
    last = state.get("last_val") or {}
    selection_path = folder / SELECTION_NAME
    selection = json.loads(selection_path.read_text()) if selection_path.is_file() else {}
    rule = selection.get("rule") or state.get("config", {}).get("selection") or "raw"
    return {"selected_by": f"mean foreground 3D Dice of {SELECTION_RULES.get(rule, rule)} on the "
                           "validation cases (the mean over the label definition's groupings "
                           "where it declares some)",
            "selection": selection, "checkpoint": checkpoint.stem, "step": state.get("step"),
            "best": state.get("best"), "best_step": state.get("best_step"),
            "validation": {k: v for k, v in last.items() if k in VALIDATION_KEYS},
            "postprocessing_validation": postprocessing.get("validation")}


def licence_notes(model_kwargs: dict) -> list[str]:
    """What a user of the weights must know about their licences."""
    notes = [DATA_LICENCE_NOTE]
    if model_kwargs.get("name") in SAM_MODELS and model_kwargs.get("checkpoint"):
        notes.append(PRETRAINED_LICENCES.get(model_kwargs["name"], "the network started from "
                                             "pretrained weights: their licence applies"))
    return notes


def _postprocessing(folder: Path, spec: LabelSpec) -> dict:
    path = folder / POSTPROCESSING_FILE
    if not path.is_file():
        return Postprocessing().to_dict(spec.class_names)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    Postprocessing.from_dict(stored, spec.class_names, source=str(path))  # refuse a bad one now
    return stored


def export_run(run: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str = "best",
               licence: str | None = None, overwrite: bool = False) -> Path:
    """Write ``run``'s model file to ``out`` (``model.medcl``).

    Args:
        run: a run folder (``checkpoint`` picks ``best``, falling back to ``last``) or a
            checkpoint file in one.
        licence: the licence the weights are shared under (default: unspecified).
        overwrite: replace ``out`` if medcl wrote it (its folder's record names it).

    Raises:
        DataError: the run or its files are missing or unreadable, or ``out`` exists.
    """
    out = Path(out)
    outputs = check_output([out], overwrite=overwrite)
    folder, path, state, spec = _load_run(run, checkpoint)
    cfg, source = state["config"], str(path)
    model = rebuild_model(state["model_kwargs"], state["model"], source=source)
    postprocessing = _postprocessing(folder, spec)
    members = {
        "model": {"model_kwargs": portable_kwargs(state["model_kwargs"]),
                  "checkpoint": path.stem, "step": state.get("step")},
        "config": shareable_config(cfg), "labels": spec.to_dict(),
        "preprocessing": describe_preprocessing(cfg, spec, model),
        "postprocessing": postprocessing,
        "training_data": describe_training_data(folder, cfg, spec),
        "metrics": describe_validation(folder, state, postprocessing, path),
        "about": {"format_version": FORMAT_VERSION, "medcl": __version__,
                  "torch": torch.__version__, "python": platform.python_version(),
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec="seconds"),
                  "licence": licence or LICENCE_UNSET,
                  "licence_notes": licence_notes(state["model_kwargs"]),
                  "run": folder.name},
    }
    write_model_file(out, weights=state["model"], members=members)
    outputs.record([out])
    log.info("wrote %s from %s (step %s)", out, path, state.get("step"))
    return out


def export_run_onnx(run: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str = "best",
                    licence: str | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``run``'s network as ONNX to ``out`` and its preprocessing to ``out.json``
    (:func:`sidecar_path`, with the ``licence`` field); returns both paths.

    Raises:
        ConfigError: the network cannot be exported (the SAM family) or ONNX is not installed.
        DataError: the run is missing or unreadable, or ``out`` exists.
    """
    out = Path(out)
    outputs = check_output([out, sidecar_path(out)], overwrite=overwrite)
    _, path, state, spec = _load_run(run, checkpoint)
    model = rebuild_model(state["model_kwargs"], state["model"], source=str(path))
    reason = can_export_onnx(model)
    if reason:
        raise ConfigError(f"{path}: {reason}")
    export_onnx(model, out, in_channels=spec.in_channels)
    outputs.record([out])
    sidecar = {"format": ONNX_SIDECAR_FORMAT, "onnx": out.name, "opset": ONNX_OPSET,
               "input": {"name": INPUT_NAME, "shape": ["B", spec.in_channels, "H", "W"],
                         "dtype": "float32"},
               "output": {"name": OUTPUT_NAME, "shape": ["B", spec.num_classes, "H", "W"]},
               "preprocessing": describe_preprocessing(state["config"], spec, model),
               "labels": spec.to_dict(), "medcl": __version__, "checkpoint": path.stem,
               "step": state.get("step"), "licence": licence or LICENCE_UNSET,
               "licence_notes": licence_notes(state["model_kwargs"])}
    atomic_write_text(sidecar_path(out), json.dumps(sidecar, indent=1) + "\n")
    outputs.record([sidecar_path(out)])
    return out, sidecar_path(out)
