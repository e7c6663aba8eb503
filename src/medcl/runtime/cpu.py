"""What the CPU can do fast, read from ``/proc/cpuinfo`` (Linux) and torch's kernel dispatch.

bf16 arithmetic is *native* on CPUs with the ``avx512_bf16`` or ``amx_bf16`` flags (AMD Zen 4 and
later, Intel Cooper Lake / Sapphire Rapids and later). Elsewhere (AVX2-only CPUs such as AMD Zen 2)
torch emulates bf16 with conversions and bf16 autocast runs several times slower than fp32
(about 7x measured on a Zen 2 for the default UNet's training step).

Native is not always *faster*: :attr:`CpuInfo.fast_bf16` says where bf16 autocast has been
measured to beat fp32 for our networks (``benchmarks/speed.py --part kernel``):

| CPU | flags | fp32 vs bf16 (one UNet step, 8 x 192 x 192) | fast_bf16 |
|---|---|---|---|
| AMD Zen 4 | avx512_bf16 | 4.0 s vs 2.2 s | yes |
| Intel Xeon (family 6 model 207), AMX not exposed | avx512_bf16 | 0.64 s vs 0.83 s (channels-last) | no |
| AMD Zen 2 | AVX2 only | 1.5 s vs 10.6 s | no |
| Intel Xeon (family 6 model 207) with AMX | amx_bf16 | 0.77 s vs 0.40 s (channels-last) | yes |
"""  # noqa: E501 - the table's rows cannot wrap

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
AVX512_BF16, AMX_BF16 = "avx512_bf16", "amx_bf16"
NATIVE_BF16_FLAGS = (AVX512_BF16, AMX_BF16)
AMD = "AuthenticAMD"


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

    @property
    def fast_bf16(self) -> bool:
        """Whether bf16 autocast is expected to beat fp32 here (module docstring's table):
        with AMX, or with AVX512-BF16 on AMD; not with AVX512-BF16 alone on Intel."""
        return AMX_BF16 in self.flags or (AVX512_BF16 in self.flags and self.vendor == AMD)


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


#: the flags that decide which kernels and precisions are fast (recorded with measurements)
VECTOR_FLAGS = ("avx2", "fma", "avx512f", AVX512_BF16, "avx512_fp16", AMX_BF16, "amx_tile")


def describe() -> dict:
    """This machine's CPU as benchmark results record it: model, vendor, family, clock, the
    vector flags present, and the kernel path torch dispatches to."""
    info = cpu_info()
    return {"cpu": info.model, "vendor": info.vendor, "family": info.family, "mhz": info.mhz,
            "flags": sorted(f for f in VECTOR_FLAGS if f in info.flags),
            "fast_bf16": info.fast_bf16, "torch_kernel_path": kernel_path()}
