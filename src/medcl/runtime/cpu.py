"""What the CPU can do fast, read from ``/proc/cpuinfo`` (Linux) and torch's kernel dispatch.

bf16 arithmetic is *native* on CPUs with the ``avx512_bf16`` or ``amx_bf16`` flags (AMD Zen 4 and
later, Intel Cooper Lake / Sapphire Rapids and later). Elsewhere (AVX2-only CPUs such as AMD Zen 2)
torch emulates bf16 with conversions and bf16 autocast runs several times slower than fp32
(about 7x measured on a Zen 2 for the default UNet's training step).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as the kernel reports it (empty fields where it does not)."""

    model: str = ""
    vendor: str = ""
    family: int | None = None
    mhz: float | None = None
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor block of a ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    family = fields.get("cpu family")
    mhz = fields.get("cpu MHz")
    return CpuInfo(model=fields.get("model name", platform.processor()),
                   vendor=fields.get("vendor_id", ""),
                   family=int(family) if family and family.isdigit() else None,
                   mhz=float(mhz) if mhz else None,
                   flags=frozenset(fields.get("flags", "").split()))


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (an empty :class:`CpuInfo` where ``/proc/cpuinfo`` is absent)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuInfo(model=platform.processor())


def kernel_path() -> str:
    """The vector instruction set torch's CPU kernels dispatch to (``AVX2``, ``AVX512``, ...)."""
    return torch.backends.cpu.get_cpu_capability()
