"""Shared fixtures: tiny NIfTI writers and the real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REAL_DATA_ENV = "MEDCL_DATA"
REPO = Path(__file__).resolve().parents[1]


def write_nifti(path: Path, data: np.ndarray, *, spacing=(1.5, 1.5, 5.0), affine=None) -> Path:
    """Write ``data`` with a non-identity affine (rotation about z + offset) unless given."""
    if affine is None:
        c, s = np.cos(0.3), np.sin(0.3)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        affine = np.eye(4)
        affine[:3, :3] = rot @ np.diag(spacing)
        affine[:3, 3] = (-10.0, 20.0, 5.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def one_line_error(capsys, *fragments) -> str:
    """The CLI's last stderr line: ``medcl CMD: error: ...`` holding every fragment."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    last = err[-1]
    assert last.startswith("medcl ") and "error:" in last
    for fragment in fragments:
        assert fragment in last
    return last


def real_data_root() -> Path:
    return Path(os.environ.get(REAL_DATA_ENV, REPO.parent / "shared" / "data"))


@pytest.fixture
def mscmr_root() -> Path:
    """The real MSCMR release; skipped with the reason when it is absent."""
    root = real_data_root() / "MSCMR_dataset"
    if not (root / "train" / "images").is_dir():
        pytest.skip(f"real MSCMR data not found at {root} (set {REAL_DATA_ENV} to the folder "
                    "that holds MSCMR_dataset/)")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small generated dataset (MSCMR layout): 4 scribbled train, 1 val, 2 test volumes."""
    from medcl.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("data") / "synth"
    return generate_dataset(root, num_train=4, num_val=1, num_test=2, shape=(64, 64, 4), seed=3)


def tiny_config(data: Path, **overrides):
    """A training configuration that runs in a second or two on the tiny dataset."""
    from medcl.training.config import TrainConfig

    base = dict(data=str(data), crop_size=32, batch_size=2, iterations=6, val_interval=3,
                log_interval=1, widths=[4, 8, 16], warmup_steps=2, num_threads=1,
                device="cpu", infer_batch_size=4, precision="fp32")
    base.update(overrides)
    return TrainConfig(**base)


class StopAtValidation(Exception):
    """Raised by :func:`interrupt_and_resume`'s callback: a kill right after a validation."""


def interrupt_and_resume(cfg, run_dir: Path, step: int) -> dict:
    """Train ``cfg`` into ``run_dir``, stopped right after the validation of ``step`` (its
    ``last.pt`` saved, as a kill after a checkpoint), then resume it to the end; the resumed
    ``train``'s result."""
    from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint
    from medcl.training.run import resume_config, train

    def interrupt(record):
        if record["event"] == "val" and record["step"] == step:
            raise StopAtValidation

    with pytest.raises(StopAtValidation):
        train(cfg, run_dir, callback=interrupt)
    assert load_checkpoint(checkpoint_path(run_dir, "last"))["step"] == step
    return train(resume_config(run_dir), run_dir, resume=True)


#: training flags of the CLI tests: a run in a second or two on the tiny dataset
CLI_TRAIN_FLAGS = ["--crop-size", "32", "--batch-size", "2", "--iterations", "4",
                   "--val-interval", "2", "--widths", "4", "8", "16", "--num-threads", "1",
                   "--device", "cpu"]


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory):
    """A run folder trained by ``medcl train`` on the tiny dataset (read-only for tests)."""
    from medcl.cli import main

    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run),
                 *CLI_TRAIN_FLAGS]) == 0
    return run
