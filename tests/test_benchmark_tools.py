"""The benchmark bookkeeping: seed variants of a row, and the mean learning curve with its band."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_peak  # benchmarks/ is a folder of scripts, not a package
import gpu_rows
import mscmr
import report
import seeds
import speed

from medcl.runtime.cpu import CpuInfo


@pytest.mark.parametrize(("name", "row"), [
    ("mscmr_few5_recommended_seed43_30min", "mscmr_few5_recommended_30min"),
    ("mscmr_few5_pce_lite_medsam_sam12_seed7_30min", "mscmr_few5_pce_lite_medsam_sam12_30min"),
    ("myops_medcl_30min", "myops_medcl_30min"),
    ("mscmr_few5_seedless_30min", "mscmr_few5_seedless_30min"),  # "seed" inside a word stays
])
def test_row_name_drops_only_the_seed_word(name, row):
    assert seeds.row_name(name) == row


def test_seed_files_finds_every_seed_of_a_row_and_no_other(tmp_path):
    for name in ("m_few5_medcl_30min", "m_few5_medcl_seed43_30min", "m_few5_medcl_seed44_30min",
                 "m_few5_medcl_60min", "m_few5_medcl_warm_30min"):
        (tmp_path / f"{name}.json").write_text("{}")
    found = [p.stem for p in seeds.seed_files("m_few5_medcl_30min", tmp_path)]
    assert found == ["m_few5_medcl_30min", "m_few5_medcl_seed43_30min", "m_few5_medcl_seed44_30min"]


def test_mean_curve_interpolates_the_seeds_onto_one_grid():
    one = {"val_curve_minutes_dice": [[0.0, 0.0], [10.0, 1.0], [12.0, 1.0]]}
    two = {"val_curve_minutes_dice": [[0.0, 0.2], [5.0, None], [10.0, 0.4]]}
    minutes, mean, std = report.mean_curve([one, two])
    assert minutes[0] == 0.0 and minutes[-1] == 10.0  # ends at the earliest last validation
    middle = np.argmin(np.abs(minutes - 5.0))
    at_five = minutes[middle]
    # by hand: seed one 0.1 * t, seed two 0.2 + 0.02 * t
    expected = np.array([0.1 * at_five, 0.2 + 0.02 * at_five])
    assert mean[middle] == pytest.approx(expected.mean())
    assert std[middle] == pytest.approx(expected.std())
    assert std[0] == pytest.approx(0.1)


@pytest.mark.parametrize(("vendor", "family", "flags", "fp32", "bf16"), [
    ("AuthenticAMD", 23, {"avx2", "fma"}, 32, 32),  # Zen 2: 2 x 256-bit FMA, bf16 emulated
    ("AuthenticAMD", 25, {"avx2", "fma"}, 32, 32),  # Zen 3
    ("AuthenticAMD", 25, {"avx2", "fma", "avx512f", "avx512_bf16"}, 32, 64),  # Zen 4
    ("GenuineIntel", 6, {"avx2", "fma", "avx512f", "avx512_bf16"}, 64, 128),
])
def test_peak_table_by_hand(vendor, family, flags, fp32, bf16):
    info = CpuInfo(vendor=vendor, family=family, mhz=2000.0, flags=frozenset(flags))
    assert cpu_peak.flops_per_cycle(info)[0] == {"fp32": fp32, "bf16": bf16}
    # 2 cores x 2 GHz x FLOP per cycle
    assert cpu_peak.peak(info, cores=2)["gflops"]["fp32"] == pytest.approx(4 * fp32)


def test_kernel_config_names():
    config = speed.KernelConfig.parse("fp32+cl+b4")
    assert (config.precision, config.channels_last, config.compile, config.batch_size) == (
        "fp32", True, False, 4)
    assert speed.KernelConfig.parse("bf16+compile").compile
    with pytest.raises(SystemExit, match="valid: cl, compile, b<batch size>, t<threads>"):
        speed.KernelConfig.parse("fp32+nhwc")


def test_finished_run_skips_records_without_a_step(tmp_path):
    """A SAM run's metrics.jsonl starts with an ``embeddings`` record that has no step."""
    import json

    records = [{"event": "embeddings", "computed": 457, "seconds": 11.8},
               {"event": "step", "step": 10, "elapsed": 5.0},
               {"event": "val", "step": 10, "elapsed": 6.0, "mean_dice": 0.3},
               {"event": "step", "step": 20, "elapsed": 9.0},
               {"event": "val", "step": 20, "elapsed": 10.0, "mean_dice": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "postprocessing.json").write_text("{}")  # chosen already: nothing to select
    outcome, seconds = mscmr.finished_run(tmp_path)
    assert outcome == {"step": 20, "best": 0.3, "best_step": 10}
    assert seconds == 10.0


def test_selections_name_each_rules_checkpoint_and_read_old_records():
    """Raw peaks at step 10, post-processed at step 20; a record from before #42 holds the raw
    score in ``mean_dice`` only."""
    new = [{"event": "val", "step": 10, "mean_dice": 0.5, "mean_dice_raw": 0.4,
            "mean_dice_post": 0.5},
           {"event": "val", "step": 20, "mean_dice": 0.7, "mean_dice_raw": 0.3,
            "mean_dice_post": 0.7}]
    assert mscmr.selections(new) == {"raw": {"step": 10, "score": 0.4},
                                     "post": {"step": 20, "score": 0.7}}
    old = [{"event": "val", "step": 10, "mean_dice": 0.3}, {"event": "val", "step": 20,
                                                           "mean_dice": 0.3}]
    assert mscmr.selections(old) == {"raw": {"step": 10, "score": 0.3}, "post": None}


def test_gpu_rows_merge_the_shared_options_and_pass_the_row_flags(tmp_path):
    import json

    spec = {"shared": {"sam": {"model": "lite_medsam", "lr": 5e-4}},
            "rows": [{"method": "medcl", "seed": 43, "tag": "t", "threads": 3,
                      "options": {"use": ["sam"], "lr": 1e-3, "batch_size": 4}}]}
    (tmp_path / "rows.json").write_text(json.dumps(spec))
    (row,) = gpu_rows.expand(tmp_path / "rows.json")
    assert row["options"] == {"model": "lite_medsam", "lr": 1e-3, "batch_size": 4}
    cmd = gpu_rows.command(row, 4.5, Path("R"), Path("runs"))
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--seed"] == "43" and flags["--threads"] == "3" and flags["--minutes"] == "4.5"
    assert flags["--device"] == "cuda" and json.loads(flags["--options"]) == row["options"]
