"""``medcl train --init-from``: a fresh run starts from a run's or a model file's weights (the
optimiser fresh), records the source and its sha256, and refuses another network in one line."""

import json

import pytest
import torch
from conftest import CLI_TRAIN_FLAGS, one_line_error

from medcl.cli import main
from medcl.errors import ConfigError, DataError
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.runtime.model_file import read_model_file, sha256_file
from medcl.training.config import TrainConfig
from medcl.training.init_from import InitSource, open_source

#: a learning rate that moves no weight measurably in one step
TINY_LR = "1e-9"
#: one step at that rate, from another seed than the source run's (its own initial weights differ)
ONE_STEP = ["--iterations", "1", "--val-interval", "1", "--lr", TINY_LR, "--seed", "7"]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "model.medcl"
    assert main(["export", str(trained_run), str(out)]) == 0
    return out


def _parameters(weights: dict, model_state: dict) -> dict:
    """The trainable tensors of a state dict (BatchNorm's running statistics move in a
    training-mode forward pass whatever the learning rate)."""
    return {k: v for k, v in weights.items() if k in model_state
            and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _train(data, out, *extra):
    return main(["train", "--data", str(data), "--out", str(out), *CLI_TRAIN_FLAGS, *ONE_STEP,
                 "--postprocessing", "none", *extra])


def test_the_first_step_starts_from_the_exported_weights(exported, tiny_dataset, tmp_path):
    source = read_model_file(exported)["weights"]
    assert _train(tiny_dataset, tmp_path / "tuned", "--init-from", str(exported)) == 0
    assert _train(tiny_dataset, tmp_path / "fresh") == 0
    tuned = load_checkpoint(checkpoint_path(tmp_path / "tuned", "last"))
    fresh = load_checkpoint(checkpoint_path(tmp_path / "fresh", "last"))
    params = _parameters(source, tuned["model"])
    assert params and len(params) == len(_parameters(fresh["model"], fresh["model"]))
    for name, value in params.items():
        torch.testing.assert_close(tuned["model"][name], value, atol=1e-6, rtol=0)
    assert any(not torch.allclose(fresh["model"][k], v, atol=1e-3) for k, v in params.items())
    # the optimiser is fresh: one step taken, not the source run's
    steps = [s["step"] for s in tuned["optimizer"]["state"].values()]
    assert steps and all(int(s) == 1 for s in steps) and tuned["step"] == 1
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["init_from"] == str(exported.absolute())
    assert config["init_from_sha256"] == sha256_file(exported)


def test_init_from_a_run_folder_records_its_checkpoint(trained_run, tiny_dataset, tmp_path):
    assert _train(tiny_dataset, tmp_path / "tuned", "--init-from", str(trained_run)) == 0
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    best = checkpoint_path(trained_run, "best")
    assert config["init_from"] == str(best) and config["init_from_sha256"] == sha256_file(best)


def test_another_network_is_one_line_exit_2(exported, tiny_dataset, tmp_path, capsys):
    assert _train(tiny_dataset, tmp_path / "wide", "--init-from", str(exported),
                  "--widths", "4", "8") == 2
    one_line_error(capsys, str(exported), "do not fit this run's model 'unet'", "widths [4, 8]",
                   "saved for model 'unet' (in_channels 1, num_classes 4, widths [4, 8, 16])")
    assert not (tmp_path / "wide" / "config.json").exists()
    assert _train(tiny_dataset, tmp_path / "none", "--init-from", str(tmp_path / "nowhere")) == 2
    one_line_error(capsys, "nowhere", "checkpoint not found")


def test_class_and_channel_counts_are_named(exported):
    source = open_source(str(exported))
    kwargs = {**source.model_kwargs, "num_classes": 3, "in_channels": 2}
    with pytest.raises(ConfigError, match=r"its network has 4 classes, 1 input channels; this "
                       r"run's data has 3 classes, 2 input channels"):
        source.check_fits(kwargs)
    source.check_fits(dict(source.model_kwargs))


def test_a_changed_source_is_refused(exported, tmp_path):
    with pytest.raises(DataError, match="is not the recorded init_from_sha256"):
        open_source(str(exported), expected_sha256="0" * 64)
    assert isinstance(open_source(str(exported), expected_sha256=sha256_file(exported)),
                      InitSource)
    with pytest.raises(ConfigError, match="init_from_sha256 needs init_from"):
        TrainConfig(data=str(tmp_path), init_from_sha256="0" * 64)
