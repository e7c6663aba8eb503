"""The benchmark bookkeeping: seed variants of a row, and the mean learning curve with its band."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # benchmarks/ is a folder of scripts, not a package
import seeds


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
