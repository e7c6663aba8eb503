import pytest
import torch

from medcl.errors import ConfigError
from medcl.models import MODEL_REGISTRY, SAM_MODELS, UNet, build_model

NUM_CLASSES = 4
UNETS = sorted(set(MODEL_REGISTRY) - set(SAM_MODELS))  # SAM segmenters: test_sam_segmenter.py


@pytest.mark.parametrize("name", UNETS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_backward(name, in_channels):
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels, num_classes=NUM_CLASSES)
    x = torch.randn(2, in_channels, 48, 80)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES, 48, 80)
    assert logits.dtype == torch.float32
    # logits, not probabilities: not normalised over the class dimension
    assert not torch.allclose(logits.sum(1), torch.ones(2, 48, 80))
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", UNETS)
def test_non_divisible_input_raises(name):
    model = build_model(name, in_channels=1, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth=16, got \(50, 80\); "
                                         r"pad to \(64, 80\)"):
        model(torch.randn(1, 1, 50, 80))


def test_wrong_channels_raises():
    model = build_model("unet_small", in_channels=3, num_classes=2)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown model 'x'; valid: lite_medsam, sam_tiny, "
                                         "sam_vit_b, unet, unet_large, unet_small"):
        build_model("x", in_channels=1, num_classes=2)


def test_unet_parameter_count():
    model = build_model("unet", in_channels=1, num_classes=NUM_CLASSES)
    count = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < count < 3_000_000, f"'unet' has {count:,} parameters"


def test_kwargs_override_defaults():
    model = build_model("unet", in_channels=1, num_classes=2, widths=(4, 8, 16), norm="group",
                        dropout=0.1)
    assert model.widths == (4, 8, 16)
    assert model.size_divisor == 4
    assert model(torch.randn(1, 1, 12, 20)).shape == (1, 2, 12, 20)
    with pytest.raises(ConfigError, match="model 'unet'"):
        build_model("unet", in_channels=1, num_classes=2, bogus=1)


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("down, up", [("maxpool", "transpose"), ("strided", "bilinear")])
def test_unet_options(norm, down, up):
    model = UNet(2, 3, widths=(4, 6), norm=norm, downsample=down, upsample=up)
    logits, features = model.forward_with_features(torch.randn(2, 2, 8, 6))
    assert logits.shape == (2, 3, 8, 6)
    assert features.shape == (2, 4, 8, 6)


@pytest.mark.parametrize("kwargs, match", [
    ({"norm": "layer"}, "unknown norm 'layer'; valid: batch, instance, group, none"),
    ({"dropout": 1.5}, "dropout"),
    ({"widths": (8,)}, "widths"),
    ({"upsample": "nearest"}, "valid: transpose, bilinear"),
    ({"downsample": "avg"}, "valid: maxpool, strided"),
])
def test_unet_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        UNet(1, 2, **kwargs)
