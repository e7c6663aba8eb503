"""The weight average (--ema-decay): the update by hand, what checkpoints keep, exact resume."""

import pytest
import torch
from conftest import interrupt_and_resume, tiny_config
from torch import nn

from medcl.errors import ConfigError
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.training.config import TrainConfig
from medcl.training.ema import WeightAverage
from medcl.training.run import train


def test_update_by_hand():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    model[0].weight.data.fill_(1.0)
    average = WeightAverage(model, decay=0.75)
    model[0].weight.data.fill_(3.0)
    model[1].running_mean.fill_(2.0)
    model[1].num_batches_tracked.fill_(5)
    average.update(model)
    # 0.75 * 1 + 0.25 * 3 = 1.5; running mean 0.75 * 0 + 0.25 * 2 = 0.5; the counter is copied
    assert average.module[0].weight.item() == pytest.approx(1.5)
    assert average.module[1].running_mean.item() == pytest.approx(0.5)
    assert average.module[1].num_batches_tracked.item() == 5
    assert not any(p.requires_grad for p in average.module.parameters())


def test_decay_is_checked():
    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0, 1\)"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="ema decay must be in"):
        WeightAverage(nn.Linear(1, 1), decay=0.0)


def test_checkpoints_keep_the_average_and_resume_exactly(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, ema_decay=0.5)
    train(cfg, tmp_path / "straight")
    ckpt = load_checkpoint(checkpoint_path(tmp_path / "straight", "last"))
    differs = [k for k in ckpt["model"]
               if ckpt["model"][k].is_floating_point()
               and not torch.equal(ckpt["model"][k], ckpt["train_model"][k])]
    assert differs  # "model" is the average, not the raw weights
    interrupt_and_resume(cfg, tmp_path / "resumed", 3)
    resumed = load_checkpoint(checkpoint_path(tmp_path / "resumed", "last"))
    for key in ("model", "train_model"):
        for name, value in ckpt[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
