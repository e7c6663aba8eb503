"""``--precision auto``: bf16 only where the hardware runs it natively, read from the CPU flags."""

import json
import logging

import pytest
import torch
from conftest import tiny_config

from medcl.errors import ConfigError
from medcl.runtime import precision as precision_module
from medcl.runtime.cpu import CpuInfo, parse_cpuinfo
from medcl.runtime.precision import resolve_precision
from medcl.training.config import TrainConfig
from medcl.training.run import train

ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model name\t: AMD EPYC 7B12
cpu MHz\t\t: 2250.000
flags\t\t: fpu sse2 avx fma avx2

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu avx512_bf16
"""
CPU = torch.device("cpu")


def fake_cpu(monkeypatch, flags, vendor="AuthenticAMD"):
    info = CpuInfo(model="Test CPU", vendor=vendor, family=25, mhz=1000.0,
                   flags=frozenset(flags))
    monkeypatch.setattr(precision_module, "cpu_info", lambda: info)


def test_parse_cpuinfo_reads_the_first_processor_only():
    info = parse_cpuinfo(ZEN2)
    assert (info.vendor, info.family, info.model, info.mhz) == ("AuthenticAMD", 23,
                                                                "AMD EPYC 7B12", 2250.0)
    assert "avx2" in info.flags and not info.native_bf16  # processor 1's flags are not read


@pytest.mark.parametrize("flags, vendor, expected", [
    ({"avx2", "fma"}, "AuthenticAMD", "fp32"),                       # Zen 2: emulated
    ({"avx2", "avx512f", "avx512_bf16"}, "AuthenticAMD", "bf16"),    # Zen 4: measured faster
    ({"avx2", "avx512f", "avx512_bf16"}, "GenuineIntel", "fp32"),    # no AMX: measured slower
    ({"avx2", "avx512_bf16", "amx_bf16"}, "GenuineIntel", "bf16")])  # AMX
def test_auto_picks_bf16_only_where_it_is_fast(monkeypatch, flags, vendor, expected):
    fake_cpu(monkeypatch, flags, vendor)
    chosen, reason = resolve_precision("auto", CPU)
    assert chosen == expected
    assert reason.startswith("auto: CPU Test CPU")


def test_forced_bf16_on_an_avx2_cpu_warns_that_it_is_emulated(monkeypatch, caplog):
    fake_cpu(monkeypatch, {"avx2"})
    with caplog.at_level(logging.WARNING, logger="medcl.runtime.precision"):
        assert resolve_precision("bf16", CPU)[0] == "bf16"
    assert "emulated" in caplog.text
    caplog.clear()
    fake_cpu(monkeypatch, {"avx512_bf16"}, vendor="GenuineIntel")
    with caplog.at_level(logging.WARNING, logger="medcl.runtime.precision"):
        resolve_precision("bf16", CPU)
    assert "measured slower than fp32" in caplog.text
    caplog.clear()
    fake_cpu(monkeypatch, {"avx512_bf16"})
    with caplog.at_level(logging.WARNING, logger="medcl.runtime.precision"):
        resolve_precision("bf16", CPU)
    assert caplog.text == ""


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; valid: auto, fp32, bf16"):
        resolve_precision("fp8", CPU)


def test_the_run_folder_records_the_choice_and_reads_back(monkeypatch, tiny_dataset, tmp_path):
    fake_cpu(monkeypatch, {"avx2"})
    train(tiny_config(tiny_dataset, precision="auto", iterations=2, val_interval=0), tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["precision"] == "auto"
    assert saved["resolved"]["precision"] == "fp32"
    assert "none of avx512_bf16, amx_bf16" in saved["resolved"]["precision_reason"]
    assert TrainConfig.from_file(tmp_path / "config.json").precision == "auto"
