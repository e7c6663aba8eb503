"""What prediction feeds the network: whole slices, or the centre window it was trained on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcl.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

#: ``full`` slices, the ``center`` window of the training crops, or ``auto``
WINDOW_MODES = ("auto", "full", "center")


def inference_window(model: nn.Module, *, crop_mode: str, crop_size: int, mode: str = "auto"
                     ) -> tuple[int, int] | None:
    """The centre window ``(h, w)`` prediction feeds ``model``, or ``None`` for whole slices.

    A network with a fixed input size (``model.fixed_input_size``: the SAM family) resizes and
    min-max normalises whatever it is given. Trained on centre crops of ``crop_size`` pixels, it
    would see a larger slice at another scale (a 480 px MyoPS slice shrunk to 256 px: 0.53x) and
    another contrast than in training; ``auto`` therefore feeds it the same centre window and
    labels everything outside it background. A fully convolutional network (the UNet) sees the
    whole slice, as does any network trained on random crops.
    """
    if mode not in WINDOW_MODES:
        raise ConfigError(f"window must be one of {', '.join(WINDOW_MODES)}, got {mode!r}")
    if mode == "auto":
        fixed = getattr(model, "fixed_input_size", None) is not None
        mode = "center" if fixed and crop_mode == "center" else "full"
    return (crop_size, crop_size) if mode == "center" else None
