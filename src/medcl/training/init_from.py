"""Fine-tuning (``--init-from``): a fresh run whose network starts from the weights of another
run, checkpoint or model file (``medcl export``); optimiser, schedule, step and random state
start fresh.

The source is recorded in the run's configuration as the file read (``init_from``, absolute)
and its ``init_from_sha256``; a resumed run continues from its own checkpoint and does not read
the source again. The network must be the same: class count and input channels are checked
first (the message names both), then every weight must fit (same ``--model``, ``--widths``,
``--norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medcl.errors import ConfigError, DataError
from medcl.runtime.checkpoint import (
    describe_network,
    find_checkpoint,
    load_checkpoint,
    load_weights,
)
from medcl.runtime.model_file import is_model_file, model_file_checkpoint, sha256_file


@dataclass(frozen=True)
class InitSource:
    """The weights a fine-tuning run starts from.

    Attributes:
        path: the file read (a checkpoint or a model file), absolute.
        sha256: of that file.
        weights: the network's state dict (what predicts: the EMA where the run kept one).
        model_kwargs: what built that network.
        step: the source's training step.
    """

    path: Path
    sha256: str
    weights: dict
    model_kwargs: dict
    step: int

    def check_fits(self, model_kwargs: dict) -> None:
        """Refuse a network of other class or channel counts, naming both.

        Raises:
            ConfigError: the counts differ.
        """
        counts = {"classes": "num_classes", "input channels": "in_channels"}
        theirs = {label: self.model_kwargs.get(key) for label, key in counts.items()}
        mine = {label: model_kwargs.get(key) for label, key in counts.items()}
        if theirs != mine:
            raise ConfigError(
                f"--init-from {self.path}: its network has "
                + ", ".join(f"{v} {k}" for k, v in theirs.items()) + "; this run's data has "
                + ", ".join(f"{v} {k}" for k, v in mine.items())
                + "; fine-tune on data with the same classes and channels")

    def load_into(self, model, model_kwargs: dict) -> None:
        """Load the weights into ``model`` (built from ``model_kwargs``).

        Raises:
            ConfigError: the class or channel counts differ.
            DataError: the weights do not fit (another architecture; the first misfit and
                the network the file was saved for are named).
        """
        self.check_fits(model_kwargs)
        load_weights(model, self.weights, source=f"--init-from {self.path}",
                     what=f"this run's {describe_network(model_kwargs)}",
                     saved_for=self.model_kwargs)


def open_source(init_from: str, *, expected_sha256: str | None = None) -> InitSource:
    """Read the weights ``init_from`` names: a model file, a checkpoint file, or a run folder
    (its ``best`` checkpoint, else ``last``).

    Raises:
        DataError: nothing readable there, or its sha256 differs from ``expected_sha256``.
    """
    path = Path(init_from)
    if is_model_file(path):
        state = model_file_checkpoint(path)
        sha256 = state["sha256"]
    else:
        path = find_checkpoint(path)
        state = load_checkpoint(path)
        sha256 = sha256_file(path)
    if expected_sha256 and sha256 != expected_sha256:
        raise DataError(f"{path}: its sha256 {sha256} is not the recorded init_from_sha256 "
                        f"{expected_sha256}; the file changed since the run was configured")
    return InitSource(path.absolute(), sha256, state["model"], state["model_kwargs"],
                      int(state.get("step") or 0))
