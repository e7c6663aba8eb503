"""Two CPU processes (gloo) train like one process with the doubled batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config

from medcl.inference.predictor import Predictor
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
from medcl.training.config import TrainConfig
from medcl.training.run import train

# every pixel labelled and no augmentation: each process's mean loss weighs its shard equally,
# so the average of the two processes' gradients is the gradient of the global mean
EXACT = dict(supervision="dense", rotate_degrees=0.0, scale_min=1.0, scale_max=1.0,
             flip_prob=0.0, rot90=False, norm="none", crop_size=32, iterations=3,
             val_interval=0, warmup_steps=0, lr=1e-2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: dict, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(TrainConfig(**cfg), run_dir)


def _dense_dataset(tiny_dataset, tmp_path):
    """The tiny dataset with its dense test cases moved into the training split (a case in
    two splits is refused as a leak)."""
    import shutil

    root = tmp_path / "dense"
    shutil.copytree(tiny_dataset, root)
    for folder in ("images", "labels"):
        shutil.rmtree(root / "train" / folder)
        shutil.move(root / "TestSet" / folder, root / "train" / folder)
    shutil.rmtree(root / "TestSet")
    return root


@pytest.mark.slow
def test_two_processes_match_one_process_with_double_batch(tiny_dataset, tmp_path):
    data = _dense_dataset(tiny_dataset, tmp_path)
    two = tiny_config(data, batch_size=2, **EXACT).to_dict()
    one = tiny_config(data, batch_size=4, **EXACT)
    mp.spawn(_worker, args=(2, _free_port(), two, str(tmp_path / "ddp")), nprocs=2, join=True)
    train(one, tmp_path / "single")
    ddp = load_checkpoint(checkpoint_path(tmp_path / "ddp", "last"))
    single = load_checkpoint(checkpoint_path(tmp_path / "single", "last"))
    assert ddp["step"] == single["step"] == 3
    for key, value in single["model"].items():
        assert torch.allclose(ddp["model"][key], value, atol=1e-5, rtol=1e-4), key
    # a checkpoint written by two processes loads in one
    assert Predictor.from_run(tmp_path / "ddp", device="cpu").spec.num_classes == 4


@pytest.mark.slow
def test_medcl_runs_on_two_processes_and_resumes_on_one(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, method="medcl", num_scribbled=2, iterations=2,
                      val_interval=0, head_grid=4, head_hidden=16, code_dim=8, crop_size=32)
    mp.spawn(_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path / "r")), nprocs=2,
             join=True)
    from medcl.training.run import resume_config

    result = train(resume_config(tmp_path / "r", {"iterations": 3}), tmp_path / "r", resume=True)
    assert result["step"] == 3
