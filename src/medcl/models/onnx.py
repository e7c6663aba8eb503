"""ONNX export of a fully convolutional network: slices ``(B, C, H, W)`` float32 in, class
logits ``(B, K, H, W)`` out, batch size and slice size dynamic (``H`` and ``W`` multiples of
the network's ``size_divisor``).

The export uses torch's own exporter (``torch.onnx.export(dynamo=True)``, which needs the
``onnx`` and ``onnxscript`` packages: ``pip install 'medcl[onnx]'``). A network with a fixed
input size (the SAM family: ``fixed_input_size``) is refused: it resizes its input inside the
network and decodes learned prompts through a two-way transformer, and medcl has not checked
that graph in ONNX (docs/share.md says what it would need).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from medcl.errors import ConfigError
from medcl.extras import require
from medcl.files import atomic_path, write_error

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: the ONNX operator set written (onnxruntime 1.17 and later run it)
ONNX_OPSET = 18
#: the example slice side of the trace, in multiples of the network's size divisor
EXAMPLE_MULTIPLE = 2


def can_export_onnx(model: nn.Module) -> str | None:
    """``None`` if :func:`export_onnx` can export ``model``, else the one-line reason."""
    if getattr(model, "fixed_input_size", None) is not None:
        return (f"{type(model).__name__} (the SAM family) cannot be exported to ONNX: it resizes "
                "its input inside the network and decodes learned class prompts; export a UNet "
                "run, or share this run as a .medcl model file")
    return None


def export_onnx(model: nn.Module, path: str | os.PathLike, *, in_channels: int) -> Path:
    """Write ``model`` (in eval mode, on the CPU) as one ONNX file at ``path``, atomically.

    Args:
        model: a network mapping ``(B, in_channels, H, W)`` to logits ``(B, K, H, W)``.
        in_channels: ``C`` of the input.

    Raises:
        ConfigError: the network cannot be exported (:func:`can_export_onnx`), or ``onnx`` /
            ``onnxscript`` are not installed.
        WriteError: the file could not be written.
    """
    reason = can_export_onnx(model)
    if reason:
        raise ConfigError(reason)
    for module in ("onnx", "onnxscript"):
        require(module, extra="onnx", feature="ONNX export")
    model = model.cpu().eval()
    side = getattr(model, "size_divisor", 1) * EXAMPLE_MULTIPLE
    example = torch.zeros(1, in_channels, side, side)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"),
            3: torch.export.Dim("width")}
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes={"x": dims}, opset_version=ONNX_OPSET,
                              verbose=False)
        except OSError as exc:
            raise write_error(path, exc) from exc
    log.info("wrote %s: ONNX opset %d, input %s (B, %d, H, W), output %s (B, K, H, W)", path,
             ONNX_OPSET, INPUT_NAME, in_channels, OUTPUT_NAME)
    return path
