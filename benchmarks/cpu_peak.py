"""The CPU's peak FLOP rate, derived from its flags, family and clock.

peak = cores x clock x FLOP per cycle per core, with FLOP per cycle from this table (one fused
multiply-add = 2 FLOP; a bf16 dot-product instruction VDPBF16PS does 2 multiply-adds per fp32
lane):

| CPU (how it is recognised) | fp32 | bf16 | why |
|---|---|---|---|
| AVX2 + FMA, no AVX-512 (AMD Zen 1-3, Intel Haswell..Alder Lake) | 32 | emulated (fp32 rate) | 2 FMA pipes x 8 fp32 lanes x 2 |
| AMD Zen 4 (vendor AuthenticAMD, family 25, avx512f) | 32 | 64 | AVX-512 on 256-bit pipes: 2 x 8 x 2; VDPBF16PS 2 x 8 lanes x 2 pairs x 2 |
| AMD Zen 5 (AuthenticAMD, family 26, avx512f) | 64 | 128 | full 512-bit pipes: twice Zen 4 |
| Intel with AVX-512 (GenuineIntel, avx512f) | 64 | 128 (with avx512_bf16) | 2 x 512-bit FMA ports x 16 lanes x 2; VDPBF16PS on the same 2 ports x 16 lanes x 2 pairs x 2 |
| Intel with AMX (amx_bf16) | 64 | 2048 | AMX TMUL: 1024 bf16 multiply-adds per cycle per core |

Sources: the vendors' optimisation manuals (AMD "Software Optimization Guide for the AMD Zen 4
Microarchitecture": AVX-512 executes on 256-bit datapaths; Intel "64 and IA-32 Architectures
Optimization Reference Manual": two 512-bit FMA units on Xeon Scalable, AMX TMUL throughput) and
instruction tables (uops.info). Some Xeon SKUs have one 512-bit FMA unit (half the AVX-512 row);
the table cannot tell them apart from the flags. The clock is /proc/cpuinfo's ``cpu MHz``: on a
virtual machine the nominal clock, not the boost clock, so a measured rate can exceed the
derived peak; the measured 2048^3 matmul rate is reported beside it as an empirical ceiling.
"""  # noqa: E501 - the table's rows cannot wrap

from __future__ import annotations

import os
import time

import torch

from medcl.runtime.cpu import CpuInfo

AMD, INTEL = "AuthenticAMD", "GenuineIntel"
ZEN4_FAMILY, ZEN5_FAMILY = 25, 26
MATMUL_SIZE = 2048
MATMUL_START_SIZE = 256
MATMUL_BUDGET_S = 2.0  # the measurement stops growing the matrices past this many seconds


def flops_per_cycle(info: CpuInfo) -> tuple[dict[str, int], str]:
    """``({"fp32": n, "bf16": m}, the table row used)`` for one core."""
    avx512 = "avx512f" in info.flags
    bf16_native = "avx512_bf16" in info.flags
    if "amx_bf16" in info.flags:
        return {"fp32": 64, "bf16": 2048}, "Intel with AMX"
    if info.vendor == AMD and avx512 and info.family == ZEN4_FAMILY:
        return {"fp32": 32, "bf16": 64}, "AMD Zen 4"
    if info.vendor == AMD and avx512 and info.family is not None and info.family >= ZEN5_FAMILY:
        return {"fp32": 64, "bf16": 128}, "AMD Zen 5"
    if info.vendor == INTEL and avx512:
        return {"fp32": 64, "bf16": 128 if bf16_native else 64}, "Intel with AVX-512"
    if "fma" in info.flags and "avx2" in info.flags:
        return {"fp32": 32, "bf16": 32}, "AVX2 + FMA (bf16 emulated)"
    return {"fp32": 8, "bf16": 8}, "unknown (SSE guess)"


def peak(info: CpuInfo, cores: int | None = None) -> dict:
    """Peak GFLOP/s per precision and how it was derived."""
    cores = cores or os.cpu_count() or 1
    per_cycle, row = flops_per_cycle(info)
    mhz = info.mhz or 0.0
    return {"gflops": {p: cores * mhz / 1e3 * f for p, f in per_cycle.items()},
            "derivation": f"{cores} cores x {mhz:.0f} MHz (/proc/cpuinfo) x FLOP/cycle "
                          f"{per_cycle} (table row: {row}; see benchmarks/cpu_peak.py)"}


def matmul_gflops(precision: str, repeats: int = 5, budget_s: float = MATMUL_BUDGET_S) -> float:
    """Measured rate of a square matrix product (an empirical ceiling): ``MATMUL_SIZE``^3, or
    the largest size (doubling from ``MATMUL_START_SIZE``) whose ``repeats`` products fit in
    about ``budget_s``: an emulated bf16 product (AVX2 CPUs) runs at well under 1 GFLOP/s, where
    a 2048^3 product takes a minute."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    size, rate = MATMUL_START_SIZE, 0.0
    while True:
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        elapsed = time.perf_counter() - start
        rate = 2 * size ** 3 * repeats / elapsed / 1e9
        if size >= MATMUL_SIZE or elapsed * 8 > budget_s:  # the next size costs 8x
            return rate
        size *= 2
