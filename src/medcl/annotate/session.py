"""The state of one annotation server: the cases, the run folder, the training round and the
review of the current model (computed in a background thread), without any HTTP."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from medcl.annotate.cases import CaseStore
from medcl.annotate.jobs import TrainingJob, round_config
from medcl.annotate.review import RunRoot, load_review, review_model
from medcl.annotate.uncertainty import case_summary, rank_slices
from medcl.errors import ConfigError, MedclError
from medcl.training.run_folder import CONFIG_NAME

log = logging.getLogger(__name__)


class Busy(MedclError):
    """An action that needs the training or review slot while it is taken."""


class Session:
    """Cases, models and the background work of one ``medcl annotate`` server.

    Args:
        store: the dataset's cases.
        run_root: the run folder (``None``: no predictions and no training from the page).
        train_config: base configuration of rounds (default: the run's ``config.json``, else
            the defaults of ``medcl train``).
    """

    def __init__(self, store: CaseStore, run_root: RunRoot | None = None,
                 train_config: dict | None = None):
        self.store = store
        self.runs = run_root
        self.train_config = train_config
        self.job: TrainingJob | None = None
        self.review = {"model": None, "state": "idle", "done": 0, "total": 0, "error": None}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- models and review --------------------------------------------------------------------
    def current_model(self) -> Path | None:
        return self.runs.current() if self.runs else None

    def uncertainty(self) -> dict[str, list[float]]:
        model = self.current_model()
        return load_review(model) if model else {}

    def ensure_review(self) -> None:
        """Start reviewing the current model in the background unless it is reviewed, being
        reviewed, or its review failed (the error stays in :attr:`review`)."""
        model = self.current_model()
        with self._lock:
            if model is None or self.review["state"] == "running" or load_review(model):
                return
            if self.review["state"] == "failed" and self.review["model"] == self.runs.name(model):
                return
            self.review.update(model=self.runs.name(model), state="running", done=0,
                               total=len(self.store.cases), error=None)
        self._spawn(self._review, model)

    def _review(self, model: Path) -> None:
        def progress(done: int, total: int) -> None:
            self.review.update(done=done, total=total)

        try:
            review_model(model, self.store, progress=progress)
            self.review["state"] = "done"
        except MedclError as exc:
            log.error("review of %s failed: %s", model, exc)
            self.review.update(state="failed", error=str(exc))

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- cases --------------------------------------------------------------------------------
    def case_list(self) -> list[dict]:
        """Every case with its scribble status and the current model's uncertainty summary."""
        uncertainty = self.uncertainty()
        return [{"id": case_id, "channels": len(case.image_paths),
                 **self.store.status(case_id), **case_summary(uncertainty.get(case_id, []))}
                for case_id, case in self.store.cases.items()]

    def case_uncertainty(self, case_id: str) -> dict:
        values = self.uncertainty().get(self.store.get(case_id).case_id, [])
        return {"slices": values, "ranking": rank_slices(values)}

    # -- training -----------------------------------------------------------------------------
    def base_config(self) -> dict:
        if self.train_config is not None:
            return dict(self.train_config)
        saved = self.runs.root / CONFIG_NAME if self.runs else None
        return json.loads(saved.read_text()) if saved and saved.is_file() else {}

    def start_training(self, options: dict) -> dict:
        """Start a round from the current scribbles, fine-tuning the current model (the last
        round's, else the run's) unless ``options`` say ``from_scratch``; returns its status.

        Raises:
            ConfigError: no run folder, a folder of images alone, or invalid options.
            Busy: a round is already running.
        """
        if self.runs is None:
            raise ConfigError("start the server with --run RUN_DIR to train from the page")
        if not self.store.trainable:
            raise ConfigError(f"{self.store.root}: training needs the nnU-Net or MSCMR layout")
        with self._lock:
            if self.job is not None and self.job.running:
                raise Busy(f"round {self.job.run_dir.name} is still training")
            config = round_config(self.base_config(), self.store.root, self.labels_file(), options,
                                  init_from=self.current_model())
            written = self.store.ensure_scribble_files()
            if written:
                log.info("wrote %d empty scribble maps for unscribbled cases", len(written))
            self.job = TrainingJob.start(self.runs.next_round(), config)
        self._spawn(self._after_training, self.job)
        return self.job.status()

    def labels_file(self) -> str | None:
        return str(self.store.labels_file) if self.store.labels_file else None

    def _after_training(self, job: TrainingJob) -> None:
        if job.wait() == 0:
            self.ensure_review()

    def training_status(self) -> dict | None:
        return self.job.status() if self.job else None

    def cancel_training(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background threads (tests and shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout)

    def close(self) -> None:
        self.cancel_training()
        self.join()
