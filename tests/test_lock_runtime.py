"""Pinning tests: FastForward really runs bf16 autocast when asked, and returns float32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcl.errors import ConfigError
from medcl.runtime.precision import FastForward


class Probe(nn.Module):
    """A conv net that records the autocast state inside its forward and the conv's dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.state: dict = {}
        self.conv.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.state["conv_dtype"] = output.dtype

    def forward(self, x):
        self.state["enabled"] = torch.is_autocast_enabled("cpu")
        self.state["autocast_dtype"] = torch.get_autocast_dtype("cpu")
        self.state["input_dtype"] = x.dtype
        return self.conv(x)


def test_bf16_runs_the_network_under_cpu_autocast_and_returns_float32():
    probe = Probe()
    out = FastForward(probe, precision="bf16")(torch.randn(2, 1, 8, 8))
    assert probe.state["enabled"] is True
    assert probe.state["autocast_dtype"] == torch.bfloat16
    assert probe.state["conv_dtype"] == torch.bfloat16
    assert out.dtype == torch.float32 and out.shape == (2, 2, 8, 8) and out.is_contiguous()
    assert probe.conv.weight.dtype == torch.float32  # parameters stay fp32
    assert not torch.is_autocast_enabled("cpu")  # switched off again afterwards


def test_fp32_runs_without_autocast():
    probe = Probe()
    x = torch.randn(2, 1, 8, 8)
    out = FastForward(probe, precision="fp32")(x)
    assert probe.state["enabled"] is False
    assert probe.state["conv_dtype"] == torch.float32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, probe.conv(x), rtol=0, atol=0)


def test_bf16_output_differs_from_fp32_by_bf16_rounding_only():
    torch.manual_seed(0)
    probe = Probe()
    x = torch.randn(2, 1, 8, 8)
    fp32 = FastForward(probe, precision="fp32")(x)
    bf16 = FastForward(probe, precision="bf16")(x)
    assert not torch.equal(fp32, bf16)  # the computation really changed precision
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)


def test_tuple_outputs_come_back_float32():
    class Pair(Probe):
        def forward(self, x):
            y = super().forward(x)
            return y, y[:, :1]

    out = FastForward(Pair(), precision="bf16")(torch.randn(1, 1, 4, 4))
    assert isinstance(out, tuple) and [o.dtype for o in out] == [torch.float32] * 2


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        FastForward(Probe(), precision="fp16")
