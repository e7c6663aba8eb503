"""The centre window a fixed-input network (SAM family) is fed at prediction: the training
crops' extent, scale and contrast, with background outside."""

import numpy as np
import pytest
import torch
from torch import nn

from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import PreprocessConfig
from medcl.data.transforms import center_crop_or_pad, center_window
from medcl.errors import ConfigError
from medcl.inference.predictor import Predictor
from medcl.inference.window import Window, inference_window
from medcl.models import build_model


def test_center_window_by_hand():
    # 5 rows cropped to 3 (rows 1-3 of the image), 3 columns padded to 5 (window columns 1-3)
    image_part, window_part = center_window((5, 3), (3, 5))
    assert image_part == (slice(1, 4), slice(0, 3))
    assert window_part == (slice(0, 3), slice(1, 4))


@pytest.mark.parametrize("size", [(7, 4), (4, 7), (6, 6), (3, 3), (5, 8)])
def test_center_window_finds_the_pixels_center_crop_or_pad_moved(size):
    image = torch.arange(size[0] * size[1], dtype=torch.float32).view(1, *size) + 1
    window, _ = center_crop_or_pad(image, None, (5, 6), ignore_index=0)
    (ir, ic), (wr, wc) = center_window(size, (5, 6))
    assert torch.equal(window[:, wr, wc], image[:, ir, ic])
    # every image pixel the window holds is found, and nothing else of the window is image
    assert window.count_nonzero() == window[:, wr, wc].numel()


class FixedInput(nn.Module):
    """A stand-in SAM: records the inputs it sees; class 1 wins where the input is > 0."""
    fixed_input_size = 256

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        fg = (x[:, :1] > 0).float() * 10
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def test_auto_window_only_for_fixed_input_networks_trained_on_centre_crops():
    sam, unet = FixedInput(), build_model("unet", in_channels=1, num_classes=2, widths=[4, 8])
    assert inference_window(sam, crop_mode="center", crop_size=96) == Window((96, 96), True)
    assert inference_window(sam, crop_mode="center", crop_size=96, mode="pad") == Window(
        (96, 96), False)
    assert inference_window(sam, crop_mode="random", crop_size=96) is None
    assert inference_window(sam, crop_mode="center", crop_size=96, mode="full") is None
    assert inference_window(sam, crop_mode="center", crop_size=96, mode="center") == Window(
        (96, 96), True)
    assert inference_window(unet, crop_mode="center", crop_size=96) is None
    assert inference_window(unet, crop_mode="random", crop_size=96, mode="pad") == Window(
        (96, 96), False)
    with pytest.raises(ConfigError, match="auto, full, center, pad"):
        inference_window(sam, crop_mode="center", crop_size=96, mode="tiles")


def test_window_for_a_slice_by_hand():
    assert Window((96, 96), crop=True).for_slice((120, 80)) == (96, 96)
    assert Window((96, 96), crop=False).for_slice((120, 80)) == (120, 96)


def test_the_sam_segmenter_has_a_fixed_input_size_and_the_unet_none():
    sam = build_model("sam_tiny", in_channels=1, num_classes=3, checkpoint=None)
    assert sam.fixed_input_size == sam.image_size
    assert build_model("unet", in_channels=1, num_classes=3, widths=[4, 8]).fixed_input_size \
        is None


def test_predictor_feeds_the_window_and_labels_the_rest_background():
    spec = LabelSpec.from_dict({"labels": {"background": 0, "fg": 1}})
    model = FixedInput()
    predictor = Predictor(model, spec, PreprocessConfig(), window=Window((4, 6), crop=True))
    slices = torch.ones(3, 1, 8, 4)          # everything foreground to the network
    probs = predictor.predict_slices(slices)
    assert model.seen == [(3, 1, 4, 6)]      # the centre window: 8 rows cropped, 4 cols padded
    assert probs.shape == (3, 2, 8, 4)
    labels = probs.argmax(1)
    assert labels[:, 2:6].eq(1).all()        # the window's rows: the network's foreground
    assert labels[:, :2].eq(0).all() and labels[:, 6:].eq(0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 8, 4))


def test_predictor_pad_window_pads_smaller_sides_and_keeps_larger_ones_whole():
    spec = LabelSpec.from_dict({"labels": {"background": 0, "fg": 1}})
    model = FixedInput()
    predictor = Predictor(model, spec, PreprocessConfig(), window=Window((4, 6), crop=False))
    probs = predictor.predict_slices(torch.ones(3, 1, 8, 4))
    assert model.seen == [(3, 1, 8, 6)]      # 8 rows kept, 4 columns padded to 6
    assert probs.shape == (3, 2, 8, 4) and probs.argmax(1).eq(1).all()


def test_predictor_without_a_window_feeds_the_whole_slice():
    spec = LabelSpec.from_dict({"labels": {"background": 0, "fg": 1}})
    model = FixedInput()
    probs = Predictor(model, spec, PreprocessConfig()).predict_slices(torch.ones(2, 1, 8, 4))
    assert model.seen == [(2, 1, 8, 4)]
    assert probs.argmax(1).eq(1).all()


def test_cli_window_center_leaves_everything_outside_the_crop_background(
        tiny_dataset, trained_run, tmp_path):
    import nibabel as nib

    from medcl.cli import main

    src = next((tiny_dataset / "TestSet" / "images").iterdir())
    assert main(["predict", "-i", str(src), "-o", str(tmp_path / "c"), "-m", str(trained_run),
                 "--window", "center", "--postprocessing", "none"]) == 0
    labels = np.asarray(nib.load(next((tmp_path / "c").glob("*.nii.gz"))).dataobj)
    crop = 32  # CLI_TRAIN_FLAGS: --crop-size 32 on 64 x 64 slices (no resampling)
    assert labels.shape[:2] == (64, 64)
    inside = np.zeros(labels.shape, bool)
    inside[16:16 + crop, 16:16 + crop] = True
    assert labels[~inside].max() == 0 and labels[inside].max() > 0
