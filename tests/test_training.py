import json

import pytest
import torch
from conftest import interrupt_and_resume, tiny_config

from medcl.errors import ConfigError, DataError
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.training.config import TrainConfig
from medcl.training.run import resume_config, train
from medcl.training.schedule import LRSchedule


def _params(run_dir, name="last"):
    return load_checkpoint(checkpoint_path(run_dir, name))["model"]


def test_train_writes_run_folder(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(tiny_dataset), run)
    assert result["step"] == 6
    saved = json.loads((run / "config.json").read_text())
    assert saved["target_spacing"] == pytest.approx(1.6)  # resolved from the data
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["event"] == "val"] == [3, 6]
    assert all(r["loss"] > 0 for r in records if r["event"] == "step")
    ckpt = load_checkpoint(checkpoint_path(run, "last"))
    assert {"model", "optimizer", "schedule", "rng", "step", "config", "label_spec",
            "model_kwargs", "elapsed_seconds"} <= set(ckpt)
    assert ckpt["step"] == 6 and ckpt["config"]["iterations"] == 6
    assert checkpoint_path(run, "best").is_file()
    with pytest.raises(DataError, match="already holds a run"):
        train(tiny_config(tiny_dataset), run)


def test_resume_continues_exactly(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset)
    train(cfg, tmp_path / "straight")
    result = interrupt_and_resume(cfg, tmp_path / "resumed", 3)
    assert result["step"] == 6
    straight, resumed = _params(tmp_path / "straight"), _params(tmp_path / "resumed")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_resume_refuses_changed_options(tiny_dataset, tmp_path):
    train(tiny_config(tiny_dataset, iterations=2, val_interval=0), tmp_path / "r")
    assert resume_config(tmp_path / "r", {"iterations": 4}).iterations == 4
    with pytest.raises(ConfigError, match=r"cannot change \['lr'\] when resuming"):
        resume_config(tmp_path / "r", {"lr": 0.5})
    with pytest.raises(DataError, match="nothing to resume"):
        train(tiny_config(tiny_dataset), tmp_path / "empty", resume=True)


def test_wall_clock_budget_stops_training(tiny_dataset, tmp_path):
    result = train(tiny_config(tiny_dataset, iterations=100_000, max_minutes=0.02,
                               val_interval=0), tmp_path / "b")
    assert 0 < result["step"] < 100_000
    assert result["elapsed_seconds"] >= 0.02 * 60


def test_few_scribbles_bf16_channels_last(tiny_dataset, tmp_path):
    result = train(tiny_config(tiny_dataset, supervision="scribble", num_scribbled=2,
                               dice_weight=0.5, iterations=2, val_interval=0, precision="bf16",
                               channels_last=True), tmp_path / "f")
    assert result["step"] == 2
    rec = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").open()]
    assert "dice" in rec[0] and "pce" in rec[0]


def test_schedule_shapes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    poly = LRSchedule(opt, kind="poly", base_lr=1.0, warmup_steps=0, total_steps=10)
    assert poly.lr_at(0, 0) == 1.0 and poly.lr_at(10, 0) == 0.0
    timed = LRSchedule(opt, kind="cosine", base_lr=1.0, warmup_steps=0, total_steps=10**6,
                       max_seconds=100.0)
    assert timed.lr_at(5, 50.0) == pytest.approx(0.5)  # half the budget: cosine at its middle
    warm = LRSchedule(opt, kind="constant", base_lr=1.0, warmup_steps=3, total_steps=10)
    assert [warm.lr_at(s, 0) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_config_validation():
    with pytest.raises(ConfigError, match="lr_schedule='step' is not valid; choose from poly"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match=r"unknown keys \['batchsize'\]"):
        TrainConfig.from_dict({"batchsize": 3})
    with pytest.raises(ConfigError, match="give num_scribbled or scribbled_cases"):
        TrainConfig(num_scribbled=2, scribbled_cases=["a"])
