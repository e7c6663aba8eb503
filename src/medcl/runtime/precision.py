"""Precision, memory layout and compilation of a network's forward pass."""

from __future__ import annotations

import logging

import torch
from torch import nn

from medcl.errors import ConfigError
from medcl.runtime.cpu import NATIVE_BF16_FLAGS, cpu_info, kernel_path

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
#: what a user may ask for: a precision, or ``auto`` (bf16 where the hardware runs it natively)
PRECISION_CHOICES = ("auto", *PRECISIONS)

log = logging.getLogger(__name__)


def fast_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 autocast is the fast choice on ``device``, and why (for the log and the run
    folder). On the CPU: native bf16 that has been measured faster than fp32
    (:attr:`medcl.runtime.cpu.CpuInfo.fast_bf16`)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return True, f"CUDA device {name} supports bf16"
        return False, f"CUDA device {name} has no native bf16"
    info = cpu_info()
    model = info.model or "unknown"
    flags = [f for f in NATIVE_BF16_FLAGS if f in info.flags]
    if info.fast_bf16:
        return True, f"CPU {model} has {', '.join(flags)}"
    if flags:
        return False, (f"CPU {model} has {', '.join(flags)} but no AMX; bf16 was measured "
                       "slower than fp32 on such a CPU (medcl/runtime/cpu.py)")
    return False, (f"CPU {model} has none of {', '.join(NATIVE_BF16_FLAGS)} (bf16 is emulated; "
                   f"torch kernels: {kernel_path()})")


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """``(precision, reason)`` for ``requested`` in :data:`PRECISION_CHOICES` on ``device``.

    ``auto`` gives bf16 autocast only where it is the fast choice (:func:`fast_bf16`), fp32
    elsewhere. Forcing bf16 elsewhere logs a warning: it works, slower than fp32 (several times
    slower where bf16 is emulated).
    """
    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"unknown precision {requested!r}; valid: {', '.join(PRECISION_CHOICES)}")
    fast, why = fast_bf16(device)
    if requested == "auto":
        chosen = "bf16" if fast else "fp32"
        return chosen, f"auto: {why}"
    if requested == "bf16" and not fast:
        log.warning("bf16 was asked for, but %s: it runs slower than fp32 there (emulated "
                    "bf16: several times slower); use --precision auto or fp32", why)
    return requested, f"asked for {requested}; {why}"


class FastForward(nn.Module):
    """Runs a network under bf16 autocast, in channels-last memory layout and/or compiled.

    The wrapped network keeps fp32 parameters (so checkpoints are unchanged); outputs are cast
    back to float32 so losses and softmax run in full precision.

    Args:
        model: network mapping ``(B, C, H, W)`` to ``(B, K, H, W)``.
        precision: ``"fp32"`` or ``"bf16"`` (autocast on the input's device type).
        channels_last: convert the network and its inputs to channels-last layout.
        compile: run the network through ``torch.compile`` while it is in training mode and is
            called without keyword arguments (validation and inference, whose batch sizes vary,
            stay eager). Compilation happens at the first call; where it fails (no C++ compiler,
            an unsupported operation) a warning is logged and the network runs eagerly from then
            on. ``use_compiled`` switches the compiled path off and on (e.g. to count FLOPs).
    """

    def __init__(self, model: nn.Module, *, precision: str = "fp32",
                 channels_last: bool = False, compile: bool = False) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.model = model
        self.size_divisor = getattr(model, "size_divisor", 1)
        self.dtype = PRECISIONS[precision]
        self.channels_last = channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        # kept out of the module tree so state dicts and parameter lists are unchanged
        object.__setattr__(self, "_compiled", torch.compile(model) if compile else None)
        self.use_compiled = compile

    def _call(self, x: torch.Tensor, kwargs: dict):
        compiled = self._compiled
        if compiled is None or not self.use_compiled or kwargs or not self.model.training:
            return self.model(x, **kwargs)
        try:
            return compiled(x)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("torch.compile failed (%s: %s); running eagerly", type(exc).__name__,
                        reason[:200])
            object.__setattr__(self, "_compiled", None)
            return self.model(x, **kwargs)

    def forward(self, x: torch.Tensor, **kwargs):
        """``kwargs`` go to the wrapped model (e.g. a SAM segmenter's ``stage``); every tensor
        it returns comes back as contiguous float32."""
        out = self.apply(lambda inputs: self._call(inputs, kwargs), x)
        if isinstance(out, tuple):
            return tuple(o.float().contiguous() for o in out)
        return out.float().contiguous()

    def apply(self, fn, x: torch.Tensor):
        """``fn(x)`` with ``x`` in this wrapper's memory layout and under its autocast, as
        :meth:`forward` runs the network (for another entry point of the network, e.g.
        ``precompute``, that must see the inputs exactly as ``forward`` would)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            return fn(x)
