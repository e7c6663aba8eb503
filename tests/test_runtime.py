import pytest
import torch

from medcl.errors import ConfigError
from medcl.models import build_model
from medcl.runtime import FastForward, resolve_device


def test_fast_forward_bf16_and_channels_last_match_fp32():
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, num_classes=3, widths=[4, 8, 16]).eval()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        ref = model(x)
        fast = FastForward(model, precision="bf16", channels_last=True)(x)
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    assert fast.shape == ref.shape
    # bf16 keeps ~3 significant digits: predictions agree where the decision is not a near-tie
    assert (fast.argmax(1) == ref.argmax(1)).float().mean() > 0.95
    assert torch.allclose(fast.softmax(1), ref.softmax(1), atol=0.05)
    assert FastForward(model).size_divisor == 4


def test_precision_and_device_are_validated():
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; valid: fp32, bf16"):
        FastForward(torch.nn.Identity(), precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"
