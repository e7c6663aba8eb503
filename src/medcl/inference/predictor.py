"""Inference: slice prediction with the training geometry, back to the input grid (whole
slices, or the centre window a fixed-input network was trained on: :func:`inference_window`).

:class:`Predictor` wraps a trained network with the run's label definition and preprocessing.
:func:`predict_path` is what ``medcl predict`` calls.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from medcl.data.datasets import group_channels
from medcl.data.dicom import volume_files
from medcl.data.dicom_seg import OUTPUT_SUFFIXES, output_suffix, save_seg
from medcl.data.geometry import GeometryNotes, read_image
from medcl.data.io import Volume, is_nifti, save_nifti
from medcl.data.labels import BACKGROUND, LabelSpec
from medcl.data.preprocessing import (
    PreprocessConfig,
    field_of_view,
    image_to_slices,
    pad_to_multiple,
    restore_probs,
    run_preprocessing,
)
from medcl.errors import CasesFailed, ConfigError, DataError, MedclError, WriteError
from medcl.evaluation.evaluate import SUMMARY_JSON, SUMMARY_MD
from medcl.evaluation.overlay import overlay_files, save_overlays
from medcl.files import check_writable
from medcl.inference.postprocessing import Postprocessing, keep_largest_component
from medcl.inference.source import read_source
from medcl.inference.window import Window, inference_window
from medcl.models import rebuild_model
from medcl.ownership import OutputFolder, check_output_outside
from medcl.runtime.device import resolve_device
from medcl.runtime.precision import FastForward, resolve_precision

log = logging.getLogger(__name__)

#: pixels per forward pass at most (16 slices of 256 x 256): bounds the activations' memory
MAX_BATCH_PIXELS = 16 * 256 * 256

PROBS_DIR = "probs"
OVERLAY_DIR = "overlays"
#: files an earlier ``medcl evaluate`` may have left beside predictions.
STALE_NEIGHBOURS = (SUMMARY_JSON, SUMMARY_MD)


class Predictor:
    """A trained network plus the run's label definition and preprocessing.

    Args:
        model: network mapping ``(B, C, H, W)`` to logits ``(B, K, H, W)``.
        spec: label definition of the training data.
        preprocess: the preprocessing used in training.
        device: where to run the network.
        batch_size: slices per forward pass (fewer for slices larger than 256 x 256, so that a
            pass holds at most ``MAX_BATCH_PIXELS`` pixels).
        flip_tta: average the probabilities over horizontal/vertical flips.
        geometry: the geometry policy for the channels of an input (:mod:`medcl.data.geometry`).
        postprocessing: applied to every predicted label map (none by default; a run's choice
            is read by :meth:`from_run`, :mod:`medcl.inference.postprocessing`).
        window: the network sees the centre window of each preprocessed slice (padded, and
            with ``window.crop`` cropped, as the training crops were; background outside it);
            ``None`` (default): whole slices (:func:`~medcl.inference.window.inference_window`).
        name: the network's registry name (recorded in a DICOM SEG).
    """

    def __init__(self, model: nn.Module, spec: LabelSpec, preprocess: PreprocessConfig, *,
                 device: torch.device | str = "cpu", batch_size: int = 16,
                 flip_tta: bool = False, geometry: str = "auto",
                 postprocessing: Postprocessing | None = None,
                 window: Window | None = None, name: str = "network") -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.spec = spec
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.flip_tta = flip_tta
        self.geometry = geometry
        self.postprocessing = postprocessing or Postprocessing()
        self.size_divisor = getattr(model, "size_divisor", 1)
        self.window = window
        self.name = name

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, checkpoint: str = "best",
                 device: str = "auto", precision: str | None = None,
                 postprocessing: str = "auto", window: str = "auto", **kwargs) -> "Predictor":
        """Load a predictor from a run folder (``best`` falls back to ``last`` if absent), from
        a checkpoint file (``run/checkpoints/best.pt``; ``checkpoint`` is then unused) or from a
        model file written by ``medcl export`` (``model.medcl``, :meth:`from_export`).

        ``precision``: ``auto`` (default: bf16 where this machine runs it natively, else fp32),
        ``fp32`` or ``bf16``; chosen for the machine that predicts, not the one that trained.
        ``postprocessing``: ``auto`` applies the run's ``postprocessing.json`` (chosen on its
        validation cases; none if absent), ``none`` applies nothing.
        ``window``: ``auto`` (default), ``full``, ``center`` or ``pad`` (:func:`inference_window`).
        """
        state, source, chosen = read_source(run_dir, checkpoint=checkpoint,
                                            postprocessing=postprocessing)
        if chosen is not None:
            kwargs.setdefault("postprocessing", chosen)
        return cls.from_checkpoint(state, source=source, device=device, precision=precision,
                                   window=window, **kwargs)

    @classmethod
    def from_export(cls, path: str | os.PathLike, *, postprocessing: str = "auto",
                    **kwargs) -> "Predictor":
        """Load a predictor from a model file written by ``medcl export`` (its members checked
        against their sha256, :mod:`medcl.runtime.model_file`); the options are
        :meth:`from_run`'s, ``postprocessing="auto"`` applies the file's post-processing."""
        state, source, chosen = read_source(path, postprocessing=postprocessing, model_file=True)
        if chosen is not None:
            kwargs.setdefault("postprocessing", chosen)
        return cls.from_checkpoint(state, source=source, **kwargs)

    @classmethod
    def from_checkpoint(cls, state: dict, *, source: Path, device: str = "auto",
                        precision: str | None = None, window: str = "auto",
                        **kwargs) -> "Predictor":
        """A predictor from checkpoint fields (``model``, ``config``, ``label_spec``,
        ``model_kwargs``, ``step``) read from ``source``; options as :meth:`from_run`."""
        spec = LabelSpec.from_dict(state["label_spec"], source=str(source))
        model = rebuild_model(state["model_kwargs"], state["model"], source=str(source))
        cfg = state["config"]
        kwargs.setdefault("window", inference_window(
            model, crop_mode=cfg.get("crop_mode", "random"), crop_size=cfg["crop_size"],
            mode=window))
        torch_device = resolve_device(device)
        chosen, reason = resolve_precision(precision or "auto", torch_device)
        log.info("inference precision %s (%s)", chosen, reason)
        model = FastForward(model, precision=chosen, channels_last=cfg.get("channels_last", False))
        kwargs.setdefault("batch_size", cfg.get("infer_batch_size", 16))
        kwargs.setdefault("geometry", cfg.get("geometry", "auto"))
        kwargs.setdefault("name", state["model_kwargs"].get("name", "network"))
        log.info("loaded %s (step %d); post-processing: %s; network input: %s", source,
                 state.get("step", -1),
                 kwargs.get("postprocessing", Postprocessing()).describe(spec.class_names),
                 "whole slices" if kwargs["window"] is None else kwargs["window"].describe())
        return cls(model, spec, run_preprocessing(cfg, spec), device=torch_device, **kwargs)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.model(batch), dim=1)
        if self.flip_tta:
            for dims in ((2,), (3,), (2, 3)):
                probs += torch.softmax(self.model(batch.flip(dims)), dim=1).flip(dims)
            probs /= 4
        return probs

    @torch.no_grad()
    def predict_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(Z, K, H, W)`` of preprocessed slices ``(Z, C, H, W)`` (on CPU):
        of the whole slices, or of the centre window with background outside it."""
        if self.window is None:
            return self._predict_whole(slices)
        return self.window.paste(self._predict_whole(self.window.inputs(slices)),
                                 slices.shape[-2:])

    def _predict_whole(self, slices: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(Z, K, H, W)`` of the network on ``slices (Z, C, H, W)`` as given."""
        was_training = self.model.training
        self.model.eval()
        padded, (h, w) = pad_to_multiple(slices, self.size_divisor)
        # large slices (a 512 x 512 CT) go fewer at a time: the activations stay bounded
        step = max(1, min(self.batch_size, MAX_BATCH_PIXELS // (h * w)))
        out = []
        for start in range(0, padded.shape[0], step):
            batch = padded[start:start + step].to(self.device)
            out.append(self._forward(batch)[..., :h, :w].float().cpu())
        self.model.train(was_training)
        return torch.cat(out)

    def predict_volume(self, image: Volume, slices: torch.Tensor | None = None) -> np.ndarray:
        """Probabilities ``(X, Y, Z, K)`` float32 on the input grid of ``image (X, Y, Z, C)``.

        ``slices`` may pass the already preprocessed slices of ``image`` to skip preprocessing.
        """
        mask = field_of_view(image.data) if self.preprocess.nonzero_mask else None
        if slices is None:
            slices = image_to_slices(image.data, image.spacing[:2], self.preprocess, mask)
        probs = restore_probs(self.predict_slices(slices), image.shape[:2])
        probs = probs.permute(2, 3, 0, 1).numpy()
        if mask is not None:  # outside the field of view is background
            probs[~mask] = np.eye(probs.shape[-1], dtype=probs.dtype)[0]
        return probs

    def label_volume(self, image: Volume, slices: torch.Tensor | None = None, *,
                     largest_component: bool = False) -> np.ndarray:
        """Class indices ``(X, Y, Z)`` (uint8 up to 256 classes) on the input grid of
        ``image (X, Y, Z, C)``.

        Unlike :meth:`predict_volume` it never holds the whole volume's probabilities: each
        batch of slices is predicted, resampled back and reduced to its argmax before the next,
        so the peak beyond the image is about ``batch_size x K`` slices of probabilities (what
        a 14-class 512 x 512 x 150 CT needs, see docs/data.md).
        """
        mask = field_of_view(image.data) if self.preprocess.nonzero_mask else None
        if slices is None:
            slices = image_to_slices(image.data, image.spacing[:2], self.preprocess, mask)
        labels = np.empty(image.shape, dtype=np.uint8 if self.spec.num_classes <= 256
                          else np.int64)
        for start in range(0, slices.shape[0], self.batch_size):
            chunk = slices[start:start + self.batch_size]
            probs = restore_probs(self.predict_slices(chunk), image.shape[:2])
            labels[..., start:start + chunk.shape[0]] = probs.argmax(1).permute(1, 2, 0).numpy()
        if mask is not None:  # outside the field of view is background
            labels[~mask] = BACKGROUND
        if not self.postprocessing.is_identity:
            labels = self.postprocessing.apply(labels)
        if largest_component:
            labels = keep_largest_component(labels, self.spec.num_classes)
        return labels

    def segment(self, probs: np.ndarray, *, largest_component: bool = False) -> np.ndarray:
        """Class indices ``(X, Y, Z)`` from probabilities ``(X, Y, Z, K)``."""
        labels = probs.argmax(axis=-1)
        if not self.postprocessing.is_identity:
            labels = self.postprocessing.apply(labels)
        if largest_component:
            labels = keep_largest_component(labels, self.spec.num_classes)
        return labels


def find_inputs(path: Path, in_channels: int,
                channel_names: tuple[str, ...] = ()) -> dict[str, tuple[Path, ...]]:
    """Case id -> channel files (``{case}_XXXX`` or ``{case}_{channel name}``) or DICOM series
    folders, for a folder or a single NIfTI file."""
    if path.is_file():
        if not is_nifti(path):
            raise DataError(f"{path}: not a .nii/.nii.gz file")
        return group_channels([path], in_channels, channel_names)
    return group_channels(volume_files(path), in_channels, channel_names)


def label_dtype(spec: LabelSpec) -> type:
    top = max(spec.label_values)
    return np.uint8 if top < 256 else (np.uint16 if top < 65536 else np.int32)


def _check_output(input_path: Path, output_dir: Path) -> None:
    """Refuse an output folder that is, holds or lies inside the input; warn of stale summaries."""
    check_output_outside(input_path, output_dir)
    stale = [output_dir / name for name in STALE_NEIGHBOURS if (output_dir / name).exists()]
    if stale:
        log.warning("%s: left from an earlier evaluation; it does not describe the new "
                    "predictions (run medcl evaluate again)", ", ".join(map(str, stale)))


def _case_outputs(target: Path, case_id: str, save_probs: bool, overlays: bool) -> list[Path]:
    """The files predicting a case into ``target`` writes: its label map, its probabilities,
    and its overlays that exist already (their names depend on the slices chosen)."""
    output_dir, files = target.parent, [target]
    if save_probs:
        files.append(output_dir / PROBS_DIR / f"{case_id}.nii.gz")
    return files + (overlay_files(output_dir / OVERLAY_DIR, case_id) if overlays else [])


def predict_case(predictor: Predictor, paths: tuple[Path, ...], target: Path, *,
                 save_probs: bool = False, largest_component: bool = False,
                 overlay_slices: int = 0, notes: GeometryNotes | None = None,
                 output_format: str = "nifti") -> list[Path]:
    """Predict one case (its channel files) into ``target`` (and its probabilities and overlays
    beside it); return the files written. The channels are read with the predictor's geometry
    policy; ``target`` gets the image's geometry with ``qform = sform``
    (:mod:`medcl.data.geometry`), or is a DICOM SEG over the first channel's series
    (``output_format="dicom-seg"``, :mod:`medcl.data.dicom_seg`)."""
    image = read_image(paths, mode=predictor.geometry, notes=notes)
    spec, output_dir = predictor.spec, target.parent
    case_id = target.name[: -len(OUTPUT_SUFFIXES[output_format])]
    written = []
    if save_probs:  # the whole volume's probabilities are needed anyway
        probs = predictor.predict_volume(image)
        labels = predictor.segment(probs, largest_component=largest_component)
        written.append(output_dir / PROBS_DIR / f"{case_id}.nii.gz")
        save_nifti(written[-1], probs, image, dtype=np.float32)
        del probs
    else:
        labels = predictor.label_volume(image, largest_component=largest_component)
    if output_format == "dicom-seg":
        save_seg(target, labels, paths[0], spec.class_names, model_name=predictor.name)
    else:
        save_nifti(target, spec.to_values(labels), image, dtype=label_dtype(spec))
    written.append(target)
    if overlay_slices:
        values = dict(zip(spec.foreground_names, spec.label_values[1:]))
        written += save_overlays(image.data[..., 0], spec.to_values(labels), None,
                                 output_dir / OVERLAY_DIR, case_id, values,
                                 num_slices=overlay_slices, affine=image.affine)
    return written


def predict_path(input_path: str | os.PathLike, output_dir: str | os.PathLike,
                 predictor: Predictor, *, save_probs: bool = False,
                 largest_component: bool = False, overwrite: bool = False,
                 skip_existing: bool = False, overlay_slices: int = 0,
                 output_format: str = "nifti",
                 progress: Callable[[str], None] | None = None) -> list[Path]:
    """Predict every case of ``input_path`` (folder or file) into ``output_dir/{case}.nii.gz``.

    A case is a NIfTI file per channel (``{case}_XXXX`` or ``{case}_{channel name}``) or a
    folder holding one DICOM series (:mod:`medcl.data.dicom`).

    Outputs keep the input's grid and geometry (as :mod:`medcl.data.geometry` reads it, written
    with ``qform = sform``) and hold the dataset's on-disk label values. Nothing is written if
    any output already exists and neither ``overwrite`` nor ``skip_existing`` is set;
    ``overwrite`` replaces only the files this prediction writes, and only those medcl wrote
    (:mod:`medcl.ownership`: a file of the user's in the way is an error, whatever
    ``overwrite``). A case that fails (unreadable, wrong geometry, ...) does not stop the others.

    Args:
        save_probs: also write ``output_dir/probs/{case}.nii.gz``: ``(X, Y, Z, K)`` float32
            probabilities (a sub-folder, so ``output_dir`` stays a folder of label maps).
        largest_component: keep only the largest 3D component of each class.
        skip_existing: leave cases whose ``{case}.nii.gz`` already exists as they are (not with
            ``overwrite``).
        overlay_slices: write this many overlay PNGs per case into ``output_dir/overlays``.
        output_format: ``nifti``, or ``dicom-seg``: ``output_dir/{case}.dcm``, a DICOM SEG over
            each case's series (DICOM series input only; class indices as segment numbers).
        progress: called with each case id once it is done (or skipped, or failed).

    Returns:
        the label maps written.

    Raises:
        ConfigError: both ``overwrite`` and ``skip_existing``.
        DataError: the input is missing or overlaps ``output_dir``, or outputs exist.
        WriteError: an output could not be written (full disk, read-only folder): stops at once.
        CasesFailed: (folder input) after every other case was predicted, naming each failed
            case and why; a single input file raises its own error instead.
    """
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.exists():
        raise DataError(f"{input_path}: input not found")
    _check_output(input_path, output_dir)
    if overlay_slices < 0:
        raise ConfigError(f"overlay_slices must be >= 0, got {overlay_slices}")
    if overwrite and skip_existing:
        raise ConfigError("overwrite (--overwrite) and skip_existing (--continue) contradict each "
                          "other: choose one")
    cases = find_inputs(input_path, predictor.spec.in_channels, predictor.spec.channel_names)
    suffix = output_suffix(output_format, (paths[0] for paths in cases.values()))
    targets = {c: output_dir / f"{c}{suffix}" for c in cases}
    existing = [c for c, p in targets.items() if p.exists()]
    if existing and skip_existing:
        log.info("%d cases already predicted in %s; skipped", len(existing), output_dir)
        cases = {c: p for c, p in cases.items() if c not in existing}
    outputs = OutputFolder(output_dir, "predict")
    outputs.check([f for c in cases for f in _case_outputs(targets[c], c, save_probs,
                                                           overlay_slices > 0)],
                  overwrite=overwrite,
                  hint="pass --overwrite to replace predictions or --continue to skip them")
    check_writable(output_dir)
    written, failures, notes = [], {}, GeometryNotes()
    for case_id, paths in cases.items():
        try:
            outputs.record(predict_case(predictor, paths, targets[case_id], save_probs=save_probs,
                                        largest_component=largest_component,
                                        overlay_slices=overlay_slices, notes=notes,
                                        output_format=output_format))
            written.append(targets[case_id])
        except MedclError as exc:
            if isinstance(exc, WriteError) or input_path.is_file():
                raise  # a full disk stops everything; a single input file is its own error
            failures[case_id] = " ".join(str(exc).split())
            log.error("case %s: %s; continuing with the next case", case_id, failures[case_id])
        if progress is not None:
            progress(case_id)
    notes.warn(str(input_path))
    if failures:
        raise CasesFailed(failures, written)
    return written
