"""Embeddings once: before the first step, a network with a frozen encoder (a SAM-family
segmenter with ``--sam-encoder frozen``) encodes every training and validation slice, so the
time budget of training goes to the decoder.

The inputs are the ones the network will see: each drawable training slice's crop as the sampler
makes it (``crop_mode="center"``, augmentation off: the same crop every time) and each
validation slice as validation feeds it (whole, or its centre window: ``inference_window``),
through the run's precision wrapper. With random
crops or image augmentation the training inputs change every step and only the validation
slices are precomputed (a warning says so). Progress is logged every tenth; the total time and
the size of the store are logged and written to the run's metrics as an ``embeddings`` record.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch
from torch import Tensor

from medcl.inference.window import Window
from medcl.runtime.precision import FastForward

log = logging.getLogger(__name__)

#: progress is reported each time another tenth of the slices is done
PROGRESS_STEPS = 10
#: slices handed to the network per precompute call (progress is reported between calls; the
#: SAM segmenter itself encodes ``ENCODE_CHUNK`` slices per encoder call to bound its memory)
ENCODER_BATCH = 4
MIB = 2 ** 20

Progress = Callable[[int, int, float], None]


def log_progress(done: int, total: int, seconds: float) -> None:
    """The default progress report: a log line with the count, the time and the rest's ETA."""
    eta = seconds / max(done, 1) * (total - done)
    log.info("embeddings: %d / %d slices, %.0f s (about %.0f s left)", done, total, seconds, eta)


def same_shape_batches(slices: Sequence[Tensor], batch_size: int) -> list[Tensor]:
    """Consecutive ``(C, H, W)`` slices stacked into ``(B, C, H, W)`` batches of at most
    ``batch_size``, a new batch starting wherever the shape changes."""
    batches: list[list[Tensor]] = []
    for s in slices:
        if not batches or len(batches[-1]) == batch_size or batches[-1][0].shape != s.shape:
            batches.append([])
        batches[-1].append(s)
    return [torch.stack(b) for b in batches]


@torch.no_grad()
def precompute(network: FastForward, slices: Sequence[Tensor], *, batch_size: int,
               device: torch.device | str = "cpu", progress: Progress | None = log_progress
               ) -> tuple[int, float]:
    """Let ``network.model`` precompute the features of ``slices`` (each ``(C, H, W)``), in
    batches, under ``network``'s precision; returns ``(computed, seconds)``."""
    model = network.model
    start, done, computed = time.monotonic(), 0, 0
    every = max(1, -(-len(slices) // PROGRESS_STEPS))
    for batch in same_shape_batches(slices, batch_size):
        computed += network.apply(model.precompute, batch.to(device))
        before, done = done, done + len(batch)
        if progress is not None and (done // every > before // every or done == len(slices)):
            progress(done, len(slices), time.monotonic() - start)
    return computed, time.monotonic() - start


def validation_inputs(slices: Tensor, window: Window | None) -> list[Tensor]:
    """What validation feeds the network of a case's slices ``(Z, C, H, W)``: each slice whole,
    or its centre ``window`` (:func:`medcl.inference.window.inference_window`)."""
    return list(slices if window is None else window.inputs(slices))


def precompute_embeddings(trainer, progress: Progress | None = log_progress) -> dict | None:
    """Precompute the embeddings of ``trainer``'s training and (on the main process) validation
    slices, when its network can (``model.can_precompute``); returns the logged record."""
    model = trainer.model
    if not model.can_precompute:
        return None
    sampler = trainer.sampler
    train: list[Tensor] = []
    if sampler.crop_mode == "center" and trainer.augment.is_identity:
        train = [sampler.crop(ci, z)[0] for ci, z in sampler.drawable()]
    else:
        log.warning("random crops or augmentation are on: training inputs change every step, "
                    "so only validation slices are precomputed (docs/sam.md)")
    val = ([z_slice for case in trainer.data.val for z_slice in validation_inputs(
        case.image, trainer.predictor.window)] if trainer.dist.is_main else [])
    log.info("embeddings: encoding %d training and %d validation slices once", len(train),
             len(val))
    computed, seconds = precompute(trainer.network, train + val, batch_size=ENCODER_BATCH,
                                   device=trainer.device, progress=progress)
    record = {"event": "embeddings", "train_slices": len(train), "val_slices": len(val),
              "computed": computed, "seconds": round(seconds, 2),
              "store_mib": round(model.precomputed_bytes / MIB, 1)}
    log.info("embeddings: %d computed in %.1f s; store %.1f MiB", computed, seconds,
             record["store_mib"])
    trainer.log(record)
    return record
