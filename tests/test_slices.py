"""The slice sampler: class-balanced draws show a small structure that uniform draws miss."""

import json

import pytest
import torch
from conftest import tiny_config

from medcl.data.slice_cache import CACHE_DIR, remove_cache, spill_to_disk
from medcl.data.slices import PreparedCase, SliceSampler
from medcl.errors import ConfigError
from medcl.training.run import train

IGNORE = 9


def _case(num_slices=10, size=64):
    """Slices of a 64 x 64 grid: class 1 (big) everywhere in slices 0-8, class 2 a single pixel
    at (60, 60) in slice 9 only."""
    image = torch.zeros(num_slices, 1, size, size)
    labels = torch.full((num_slices, size, size), IGNORE)
    labels[:9, 10:40, 10:40] = 1
    labels[9, 60, 60] = 2
    labels[9, 0:5, 0:5] = 0
    tags = torch.zeros(num_slices, 3, dtype=torch.bool)
    return PreparedCase(case_id="c", image=image, labels=labels, tags=tags, labelled=True,
                        reference=None)


def _share_with_class2(class_balance, draws=40):
    sampler = SliceSampler([_case()], crop_size=(16, 16), ignore_index=IGNORE,
                           labelled_fraction=1.0, generator=torch.Generator().manual_seed(0),
                           class_balance=class_balance)
    batch = sampler.sample(draws)
    return (batch["labels"] == 2).flatten(1).any(1).float().mean().item()


def test_class_balance_shows_the_small_class():
    # uniform: slice 9 in 1 of 10 draws, and a 16 x 16 crop of it holds the pixel ~1/16 of times
    assert _share_with_class2(0.0) < 0.1
    # balanced with 1.0: half the draws pick class 2 (of 2 classes), each crop holds its pixel
    assert _share_with_class2(1.0) >= 0.3


def test_class_balance_is_checked():
    with pytest.raises(ConfigError, match=r"class_balance must be in \[0, 1\], got 1.5"):
        SliceSampler([_case()], crop_size=(16, 16), ignore_index=IGNORE, labelled_fraction=1.0,
                     generator=torch.Generator(), class_balance=1.5)


def test_disk_cache_gives_the_same_batches_and_is_removed(tiny_dataset, tmp_path):
    """Training with --slice-cache disk draws the same batches (same losses) as in memory, and
    leaves no cache behind."""
    results = {}
    for mode in ("memory", "disk"):
        run = tmp_path / mode
        train(tiny_config(tiny_dataset, slice_cache=mode, iterations=3, val_interval=0), run)
        results[mode] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()
                         if json.loads(line)["event"] == "step"]
        assert not (run / CACHE_DIR).exists()
    assert results["memory"] == results["disk"] and len(results["disk"]) == 3


def test_spilled_case_is_memory_mapped(tmp_path):
    case = spill_to_disk(_case(), tmp_path)
    assert torch.equal(case.labels, _case().labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.image.npy", "c.labels.npy"]
    (tmp_path / "mine.npy").write_bytes(b"user data")  # not the cache's: never removed
    remove_cache(tmp_path, ["c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.npy"]
    (tmp_path / "mine.npy").unlink()
    spill_to_disk(_case(), tmp_path)
    remove_cache(tmp_path, ["c"])
    assert not tmp_path.exists()
