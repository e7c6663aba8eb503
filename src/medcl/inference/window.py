"""What prediction feeds the network: whole slices, or the centre window it was trained on."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

from torch import Tensor

from medcl.data.labels import BACKGROUND
from medcl.data.transforms import center_crop_or_pad, center_window
from medcl.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

#: ``full`` slices; ``center``: the centre window of the training crops (larger slices cropped,
#: smaller ones padded); ``pad``: smaller slices padded to it as the training crops were, larger
#: ones whole; ``auto``: :func:`inference_window`
WINDOW_MODES = ("auto", "full", "center", "pad")


class Window(NamedTuple):
    """The centre window ``size = (h, w)`` of the training crops; ``crop``: whether slices
    larger than it are cropped to it (else only smaller ones are padded to it)."""
    size: tuple[int, int]
    crop: bool

    def for_slice(self, shape: Sequence[int]) -> tuple[int, int]:
        """The window ``(h, w)`` a slice of ``shape = (H, W)`` is cropped or padded to."""
        if self.crop:
            return self.size
        return max(int(shape[0]), self.size[0]), max(int(shape[1]), self.size[1])

    def inputs(self, slices: Tensor) -> Tensor:
        """What the network is fed of ``slices (Z, C, H, W)``: their centre windows
        ``(Z, C, h, w)``, padded with 0 and cropped as the training crops were."""
        return center_crop_or_pad(slices, None, self.for_slice(slices.shape[-2:]),
                                  ignore_index=BACKGROUND)[0]

    def paste(self, probs: Tensor, shape: Sequence[int]) -> Tensor:
        """Window probabilities ``(Z, K, h, w)`` back onto slices of ``shape = (H, W)``:
        ``(Z, K, H, W)``, background (probability 1) outside the window."""
        out = probs.new_zeros(probs.shape[:2] + tuple(shape))
        out[:, BACKGROUND] = 1.0
        (image_rows, image_cols), (window_rows, window_cols) = center_window(
            shape, self.for_slice(shape))
        out[..., image_rows, image_cols] = probs[..., window_rows, window_cols]
        return out

    def describe(self) -> str:
        return (f"centre window {self.size[0]} x {self.size[1]} ("
                + ("larger slices cropped" if self.crop else "smaller slices padded to it") + ")")


def inference_window(model: nn.Module, *, crop_mode: str, crop_size: int, mode: str = "auto"
                     ) -> Window | None:
    """The centre window prediction feeds ``model``, or ``None`` for whole slices.

    A network with a fixed input size (``model.fixed_input_size``: the SAM family) min-max
    normalises and resizes whatever it is given. Trained on centre crops of ``crop_size``
    pixels, a smaller slice was padded evenly *before* that min-max; fed whole, it would be
    padded after it, at the bottom/right (another contrast and position than in training).
    ``center`` feeds every slice as training did (padded or cropped to the window, background
    outside it); ``pad`` only pads smaller slices and feeds larger ones whole (shrunk to the
    input size). Chosen on validation of two datasets (docs/results.md, "SAM: whole slices
    against the training window"): on MyoPS, whose 480 px slices ``pad`` shrinks to 0.53x,
    ``center`` doubles the Dice; on MSCMR the two are within 0.01. So ``auto`` is ``center`` for
    a fixed-input network trained on centre crops and ``full`` otherwise: a fully convolutional
    network (the UNet) sees the whole slice, as does any network trained on random crops.
    """
    if mode not in WINDOW_MODES:
        raise ConfigError(f"window must be one of {', '.join(WINDOW_MODES)}, got {mode!r}")
    if mode == "auto":
        fixed = getattr(model, "fixed_input_size", None) is not None
        mode = "center" if fixed and crop_mode == "center" else "full"
    if mode == "full":
        return None
    return Window((crop_size, crop_size), crop=mode == "center")
