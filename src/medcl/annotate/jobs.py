"""A training round started from the page: ``medcl train`` in its own process.

The round is an ordinary run folder: the same ``medcl train`` command a user types, with a
configuration file written beside its outputs (``round_NNN/annotate_config.json``) and its
output in ``round_NNN/train.log``. Progress and the learning curve are read from the run's
``metrics.jsonl`` as the trainer appends to it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import medcl
from medcl.errors import ConfigError
from medcl.files import atomic_write_text
from medcl.training.config import TrainConfig
from medcl.training.run_folder import METRICS_NAME

log = logging.getLogger(__name__)

CONFIG_FILE = "annotate_config.json"
LOG_FILE = "train.log"
#: options of a round that the page may set; everything else comes from the base configuration
PAGE_OPTIONS = ("iterations", "max_minutes")
#: options that select a subset of the scribbles: a round trains on all of them
_SUBSET_OPTIONS = ("num_scribbled", "scribbled_cases")
#: where the base run started from: a round starts from the previous round's model instead
_INIT_OPTIONS = ("init_from", "init_from_sha256")
#: the page's request to train a round from the model's initial weights
FROM_SCRATCH = "from_scratch"
#: lines of the log shown when a round fails
LOG_TAIL_LINES = 8


def round_config(base: dict, data: Path, labels: str | None, page: dict, *,
                 init_from: Path | None = None) -> dict:
    """The configuration of a round: ``base`` on the dataset, all scribbles, page options,
    starting from the weights of ``init_from`` (the previous round's model) unless the page asks
    for :data:`FROM_SCRATCH`.

    Raises:
        ConfigError: the page sets an option not in :data:`PAGE_OPTIONS`, or a value is invalid.
    """
    page = dict(page)
    from_scratch = page.pop(FROM_SCRATCH, False)
    if not isinstance(from_scratch, bool):
        raise ConfigError(f"{FROM_SCRATCH} must be true or false, got {from_scratch!r}")
    unknown = sorted(set(page) - set(PAGE_OPTIONS))
    if unknown:
        raise ConfigError(f"training options {unknown} cannot be set from the page; "
                          f"allowed: {', '.join((*PAGE_OPTIONS, FROM_SCRATCH))}")
    cfg = {k: v for k, v in base.items() if k not in _SUBSET_OPTIONS + _INIT_OPTIONS}
    if init_from is not None and not from_scratch:
        cfg["init_from"] = str(init_from)
    cfg.update(page, data=str(data), labels=labels)
    return TrainConfig.from_dict(cfg, source="training round").to_dict()


def read_metrics(path: Path) -> dict:
    """Progress of a run from its ``metrics.jsonl``.

    Returns:
        ``{"step", "total", "elapsed", "budget", "loss": [[step, loss], ...],
        "val": [[step, mean_dice], ...]}`` (``step`` 0 before the first record).
    """
    out = {"step": 0, "total": None, "elapsed": 0.0, "budget": None, "loss": [], "val": []}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if record.get("event") == "step":
            out.update(step=record["step"], total=record["total"], elapsed=record["elapsed"],
                       budget=record.get("budget"))
            out["loss"].append([record["step"], record["loss"]])
        elif record.get("event") == "val":
            out["val"].append([record["step"], record["mean_dice"]])
    return out


class TrainingJob:
    """One ``medcl train`` process writing the run folder ``run_dir``."""

    def __init__(self, run_dir: Path, process: subprocess.Popen):
        self.run_dir = run_dir
        self.process = process

    @classmethod
    def start(cls, run_dir: Path, config: dict) -> "TrainingJob":
        """Write ``config`` into ``run_dir`` and start ``python -m medcl train`` on it."""
        run_dir.mkdir(parents=True, exist_ok=False)
        config_path = run_dir / CONFIG_FILE
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
        env = dict(os.environ)  # the child imports this very medcl, installed or not
        package_root = str(Path(medcl.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "medcl", "-q", "train", "--config", str(config_path),
                   "--out", str(run_dir)]
        with (run_dir / LOG_FILE).open("w") as log_fh:
            process = subprocess.Popen(command, stdout=log_fh, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=run_dir)
        log.info("training round %s started (pid %d)", run_dir, process.pid)
        return cls(run_dir, process)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def status(self) -> dict:
        """``{"round", "state", "returncode", "log_tail", **read_metrics(...)}``."""
        code = self.process.poll()
        state = "running" if code is None else "finished" if code == 0 else "failed"
        tail = []
        if state == "failed":
            lines = (self.run_dir / LOG_FILE).read_text(errors="replace").splitlines()
            tail = lines[-LOG_TAIL_LINES:]
        return {"round": self.run_dir.name, "state": state, "returncode": code,
                "log_tail": tail, **read_metrics(self.run_dir / METRICS_NAME)}

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def cancel(self) -> None:
        """Stop the training process (this job's own child, by its handle)."""
        if self.running:
            self.process.terminate()
            self.process.wait()
            log.info("training round %s cancelled", self.run_dir)
