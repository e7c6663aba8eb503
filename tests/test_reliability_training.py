"""Training survives signals, full disks, kills and dead ends (issue #10, items 3-7)."""

import json
import os
import shutil
import signal

import pytest
import torch
from conftest import tiny_config

from medcl.cli import main
from medcl.errors import DataError, Interrupted, WriteError
from medcl.runtime import checkpoint as checkpoint_module
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.training import run as run_module
from medcl.training.interrupt import PeriodicSave
from medcl.training.run import resume_config, train
from medcl.training.run_folder import CASES_NAME, CONFIG_NAME, METRICS_NAME
from medcl.training.trainer import Trainer

TRAIN_FLAGS = ["--crop-size", "32", "--batch-size", "2", "--iterations", "6", "--widths", "4",
               "8", "16", "--num-threads", "1", "--device", "cpu", "--log-interval", "1",
               "--warmup-steps", "2", "--infer-batch-size", "4"]


def _signal_at(monkeypatch, step, signum):
    """Send ``signum`` to this process during training step ``step`` (1-based)."""
    real = Trainer.train_step

    def train_step(self):
        out = real(self)
        if self.state["step"] + 1 == step:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(Trainer, "train_step", train_step)


def _weights(run_dir):
    return load_checkpoint(checkpoint_path(run_dir, "last"))["model"]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_last_and_exits_with_128_plus_signal(signum, code, tiny_dataset, tmp_path,
                                                          monkeypatch, capsys):
    run = tmp_path / "run"
    _signal_at(monkeypatch, 3, signum)
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--val-interval", "0",
                 *TRAIN_FLAGS]) == code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{signal.Signals(signum).name} at step 3: saved" in err
    assert f"continue with: medcl train --out {run} --resume" in err
    assert load_checkpoint(checkpoint_path(run, "last"))["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_resume_after_sigterm_is_bit_exact(tiny_dataset, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_dataset, val_interval=0)
    train(cfg, tmp_path / "whole")
    _signal_at(monkeypatch, 4, signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM at step 4") as info:
        train(cfg, tmp_path / "cut")
    assert info.value.exit_code == 143
    monkeypatch.undo()
    train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / METRICS_NAME).open()
             if json.loads(line)["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated step lines


def test_time_based_checkpoint_without_validation(tiny_dataset, tmp_path, monkeypatch):
    saved = []
    real = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self, name: (saved.append(
        (name, self.state["step"])), real(self, name)))
    train(tiny_config(tiny_dataset, val_interval=0, checkpoint_minutes=1e-9), tmp_path / "r")
    assert [s for s in saved if s[0] == "last"][:5] == [("last", k) for k in range(1, 6)]
    clock = PeriodicSave(2.0, elapsed_seconds=10.0)
    assert not clock.due(129.0) and clock.due(130.0)
    assert not PeriodicSave(0.0).due(1e9)


def test_configured_run_without_checkpoint_resumes_from_step_0(tiny_dataset, tmp_path,
                                                                capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_config(tiny_dataset, iterations=2)
    (run / CONFIG_NAME).write_text(json.dumps(cfg.to_dict()))
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), *TRAIN_FLAGS]) == 2
    assert "--resume starts it from step 0" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert load_checkpoint(checkpoint_path(run, "last"))["step"] == 2
    with pytest.raises(DataError, match="nothing to resume"):
        resume_config(tmp_path / "empty")


def test_data_path_is_stored_absolute_and_may_move_on_resume(tiny_dataset, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tiny_dataset.parent)
    cfg = tiny_config(tiny_dataset.name, iterations=2, val_interval=2)
    run = tmp_path / "run"
    train(cfg, run)
    stored = json.loads((run / CONFIG_NAME).read_text())["data"]
    assert stored == str(tiny_dataset.absolute())
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dataset, moved)
    monkeypatch.chdir(tmp_path)
    train(resume_config(run, {"data": "moved", "iterations": 4}), run, resume=True)
    assert json.loads((run / CONFIG_NAME).read_text())["data"] == str(moved)
    assert load_checkpoint(checkpoint_path(run, "last"))["step"] == 4
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    for sub in ("images", "labels"):
        min((other / "train" / sub).iterdir()).unlink()
    with pytest.raises(DataError, match=f"{CASES_NAME}: the train cases differ"):
        train(resume_config(run, {"data": str(other), "iterations": 6}), run, resume=True)


def test_full_disk_checkpoint_is_one_line_and_keeps_the_earlier_one(tiny_dataset, tmp_path,
                                                                     monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, iterations=3, val_interval=3), run)
    before = checkpoint_path(run, "last").read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(WriteError, match=r"(best|last).pt: cannot write "
                                         r"\(RuntimeError: \[enforce fail"
                                         r".*\); [0-9.]+ GiB free on that disk"):
        train(resume_config(run, {"iterations": 6}), run, resume=True)
    monkeypatch.undo()
    assert checkpoint_path(run, "last").read_bytes() == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_unwritable_run_folder_fails_before_loading_data(tiny_dataset, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    monkeypatch.setattr(run_module, "load_training_data",
                        lambda cfg: pytest.fail("data loaded before the output was checked"))
    with pytest.raises(WriteError, match="file/run/checkpoints: cannot write"):
        train(tiny_config(tiny_dataset), blocker / "run")


def test_stale_temporaries_removed_and_metrics_truncated_on_resume(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, iterations=3, val_interval=3), run)
    stale = run / "checkpoints" / ".last.pt.k3j_x9a2.tmp.pt"
    stale.write_bytes(b"18 MB of a killed write")
    foreign = run / "checkpoints" / "notes.txt"
    foreign.write_text("mine")
    with (run / METRICS_NAME).open("a") as fh:  # steps logged after the checkpoint, then kill -9
        fh.write(json.dumps({"event": "step", "step": 4}) + "\n" + '{"event": "st')
    train(resume_config(run, {"iterations": 5}), run, resume=True)
    assert not stale.exists() and foreign.read_text() == "mine"
    steps = [json.loads(line)["step"] for line in (run / METRICS_NAME).open()
             if json.loads(line)["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_checkpoint_that_needs_code_execution_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "label_spec": {}, "model_kwargs": _RunsCode()}, path)
    with pytest.raises(DataError, match=r"evil.pt: refused: loading it would run code"):
        load_checkpoint(path)
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_every_torch_load_is_weights_only():
    import pathlib
    import re

    src = pathlib.Path(checkpoint_module.__file__).parents[1]
    calls = [(p, m.group(0)) for p in src.rglob("*.py")
             for m in re.finditer(r"torch\.load\([^)]*\)", p.read_text())]
    assert calls and all("weights_only=True" in call for _, call in calls), calls


# -- issue #36 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--crop-size", "37"], "crop_size must be a multiple of 4 for model 'unet' with widths "
                            "[4, 8, 16] (it halves its input 2 times), got 37; e.g. 36 or 40"),
    (["--lr", "nan"], "lr must be finite and > 0, got nan"),
    (["--weight-decay", "-1"], "weight_decay must be finite and >= 0, got -1.0"),
])
def test_bad_option_exits_2_before_reading_data_and_writes_nothing(flags, message, tiny_dataset,
                                                                   tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_module, "load_training_data",
                        lambda *a, **k: pytest.fail("data loaded before the options were checked"))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), *TRAIN_FLAGS,
                 *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"medcl train: error: {message}"]
    assert not run.exists()


def test_run_failing_before_its_first_step_leaves_nothing_that_blocks_a_retry(tiny_dataset,
                                                                               tmp_path,
                                                                               monkeypatch):
    def boom(self):
        raise RuntimeError("out of memory in the first step")

    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("the user's")  # the folder and this file were there before
    monkeypatch.setattr(Trainer, "train_step", boom)
    for out in (run, tmp_path / "new" / "run"):
        with pytest.raises(RuntimeError, match="first step"):
            train(tiny_config(tiny_dataset), out)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    train(tiny_config(tiny_dataset, iterations=2, val_interval=2), run)  # not "already holds"
    assert load_checkpoint(checkpoint_path(run, "last"))["step"] == 2


def test_checkpoint_of_another_network_is_one_line_at_resume_and_predict(tiny_dataset, tmp_path,
                                                                         capsys):
    from conftest import write_nifti

    from medcl.models import build_model

    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, iterations=2, val_interval=2, postprocessing="none"), run)
    config = json.loads((run / CONFIG_NAME).read_text())
    (run / CONFIG_NAME).write_text(json.dumps({**config, "widths": [8, 16, 32]}))
    assert main(["train", "--out", str(run), "--resume", "--iterations", "4"]) == 2
    # 66 tensors: 5 conv blocks of 2 x (conv weight, 5 batch-norm tensors), 2 up-convolutions
    # (weight, bias), the head (weight, bias); all but the 10 scalar batch counts and head.bias
    # (4 classes) change shape with the widths: 55 misfits
    net = "model 'unet' (in_channels 1, num_classes 4, widths {})"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"medcl train: error: {checkpoint_path(run, 'last')}: the weights do not fit "
        f"{net.format([8, 16, 32])}: encoders.0.0.weight is (4, 1, 3, 3) in the file, "
        f"(8, 1, 3, 3) in the network (and 54 more); the file was saved for "
        f"{net.format([4, 8, 16])}"]
    state = torch.load(checkpoint_path(run, "best"), weights_only=True)
    three = build_model("unet", in_channels=1, num_classes=3, widths=[4, 8, 16])
    state["model"] = three.state_dict()  # the head's weight and bias are for 3 classes
    other = tmp_path / "three_classes.pt"
    torch.save(state, other)
    image = write_nifti(tmp_path / "in" / "a.nii.gz", torch.rand(32, 32, 2).numpy())
    assert main(["predict", "-i", str(image), "-o", str(tmp_path / "out"), "-m", str(other),
                 "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"medcl predict: error: {other}: the weights do not fit {net.format([4, 8, 16])}: "
        "head.weight is (3, 4, 1, 1) in the file, (4, 4, 1, 1) in the network (and 1 more)")


def test_random_bytes_are_not_a_pytorch_checkpoint(tmp_path):
    for name, content in (("random.pt", bytes(range(256)) * 16), ("empty.pt", b""),
                          ("notes.pt", b"weights: see the wiki\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as info:
            load_checkpoint(tmp_path / name)
        assert str(info.value) == (f"{tmp_path / name}: not a PyTorch checkpoint (neither the "
                                   "zip archive torch.save writes nor its legacy format)")
    legacy = tmp_path / "legacy.pt"  # torch.save before torch 1.6: a pickle, refused as code
    torch.save({"model": _RunsCode()}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(DataError, match="legacy.pt: refused: loading it would run code"):
        load_checkpoint(legacy)
    zipped = tmp_path / "zipped.pt"
    torch.save({"model": _RunsCode()}, zipped)
    with pytest.raises(DataError, match=r"zipped.pt: refused: loading it would run code \(it "
                                        r"holds posix.system;"):
        load_checkpoint(zipped)


def test_sigint_during_startup_imports_exits_130_in_one_line():
    """Ctrl-C while torch is being imported (the seconds before any command runs)."""
    import subprocess
    import sys
    from pathlib import Path

    import medcl

    code = ("import sys\n"
            "class CtrlC:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, CtrlC())\n"
            "from medcl.cli import main\n"  # what the console script `medcl` does
            "sys.exit(main(['train', '--help']))\n")
    src = Path(medcl.__file__).parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(src)})
    assert (proc.returncode, proc.stderr) == (130, "medcl: interrupted\n")
