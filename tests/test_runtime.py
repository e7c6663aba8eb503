import pytest
import torch

from medcl.errors import ConfigError
from medcl.models import build_model
from medcl.runtime.device import resolve_device
from medcl.runtime.precision import FastForward


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


def test_compiled_forward_matches_eager_and_keeps_the_state_dict():
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, num_classes=3, widths=[4, 8])
    fast = FastForward(model, compile=True)
    assert list(fast.state_dict()) == [f"model.{k}" for k in model.state_dict()]
    x = torch.randn(2, 1, 16, 16)
    model.eval()  # eval mode runs eagerly (varying inference batches would recompile)
    with torch.no_grad():
        eager = fast(x)
    model.train()
    compiled = fast(x)
    compiled.sum().backward()
    assert fast._compiled is not None  # compiled without falling back
    fast.use_compiled = False
    reference = fast(x)
    assert torch.allclose(compiled, reference, atol=1e-5)
    assert eager.shape == reference.shape
    assert all(p.grad is not None for p in model.parameters())


def test_compile_failure_falls_back_to_eager(caplog):
    model = build_model("unet", in_channels=1, num_classes=3, widths=[4, 8])
    fast = FastForward(model, compile=True)

    def broken(x):
        raise RuntimeError("no C++ compiler\nlong trace")

    object.__setattr__(fast, "_compiled", broken)
    x = torch.randn(2, 1, 16, 16)
    with caplog.at_level("WARNING"):
        out = fast(x)
    assert "torch.compile failed (RuntimeError: no C++ compiler)" in caplog.text
    assert fast._compiled is None
    fast.use_compiled = False
    assert torch.equal(out, fast(x))
