"""Surviving the end of a job: SIGTERM/SIGINT stop training after the current step with a saved
``last.pt``, and a clock saves ``last.pt`` every few minutes whatever the validation interval.

Slurm and Kubernetes send SIGTERM some seconds before they kill a job; Ctrl-C sends SIGINT.
While :class:`StopSignal` is active, the first of either is recorded and the loop stops at the
end of the step it is in; a second one raises :class:`KeyboardInterrupt` at once (the step is
abandoned, the last saved checkpoint stays as it was).
"""

from __future__ import annotations

import logging
import shlex
import signal
import threading
from pathlib import Path

import torch

from medcl.errors import Interrupted
from medcl.runtime import distributed
from medcl.runtime.checkpoint import checkpoint_path

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: a process ended by signal N exits with 128 + N (130 for SIGINT, 143 for SIGTERM).
SIGNAL_EXIT_BASE = 128
SECONDS_PER_MINUTE = 60.0


class StopSignal:
    """Context manager: records SIGTERM/SIGINT instead of dying; restores the old handlers.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}")
        self.received = signum
        log.warning("received %s: stopping after the current step (send it again to abandon "
                    "the step)", signal.Signals(signum).name)

    def agreed(self, device: torch.device) -> int | None:
        """The signal to stop on, the same on every process (rank 0's decides)."""
        value = distributed.broadcast_float(float(self.received or 0), device)
        return int(value) or None


class PeriodicSave:
    """Whether ``last.pt`` is due: every ``minutes`` of training time (0: never)."""

    def __init__(self, minutes: float, elapsed_seconds: float = 0.0) -> None:
        self.interval = minutes * SECONDS_PER_MINUTE
        self.last = elapsed_seconds

    def due(self, elapsed_seconds: float) -> bool:
        return bool(self.interval) and elapsed_seconds - self.last >= self.interval

    def saved(self, elapsed_seconds: float) -> None:
        self.last = elapsed_seconds


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in ``run_dir``."""
    return f"medcl train --out {shlex.quote(str(Path(run_dir).absolute()))} --resume"


def interrupted(signum: int, step: int, run_dir: Path) -> Interrupted:
    """The error training raises after saving on a signal; the CLI exits with its code."""
    name = signal.Signals(signum).name
    return Interrupted(f"{name} at step {step}: saved {checkpoint_path(run_dir, 'last')}; "
                       f"continue with: {resume_command(run_dir)}",
                       exit_code=SIGNAL_EXIT_BASE + signum)
