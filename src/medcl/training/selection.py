"""Which checkpoint is kept, judged on what ``medcl predict`` writes.

Every validation predicts the validation cases once (:func:`validate_checkpoint`); their label
maps are scored raw and, with ``postprocessing='auto'``, after the post-processing that
:func:`~medcl.training.postprocessing_choice.search_postprocessing` chooses on those same label
maps (no second forward pass). A validation is thus one pair (checkpoint, post-processing) with
two scores, a :class:`Candidate`. :class:`Selection` keeps the best candidate under each rule
of :data:`~medcl.training.config.SELECTION_RULES`; the configured rule's best is ``best.pt``,
and at the end of training its post-processing is written to ``postprocessing.json``
(:func:`finish_selection`), so the two come from one validation.

Every validated checkpoint is scored with the whole search, the one ``medcl postprocess``
runs, so the joint choice over (checkpoint, post-processing) pairs covers all of them: no
finalists need keeping for a re-scoring at the end. What the search costs is measured and
logged per validation (``postprocessing_seconds`` in ``metrics.jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medcl.data.slices import PreparedCase
from medcl.files import atomic_write_text
from medcl.inference.postprocessing import Postprocessing
from medcl.inference.predictor import Predictor
from medcl.training.config import SELECTION_RULES
from medcl.training.postprocessing_choice import (
    Search,
    search_postprocessing,
    select_postprocessing,
    write_choice,
)
from medcl.training.run_folder import SELECTION_NAME
from medcl.training.validation import predict_cases, score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One validated checkpoint.

    Attributes:
        step: the training step of the checkpoint.
        raw: its validation selection score (mean Dice) on the raw argmax.
        post: the score after the post-processing chosen on the same label maps; ``None``
            where none was searched (``postprocessing='none'``).
        postprocessing: that post-processing (:meth:`Postprocessing.to_dict` form).
        tried: the scores the search tried (``Search.tried``).
    """

    step: int
    raw: float
    post: float | None = None
    postprocessing: dict | None = None
    tried: dict | None = None

    def score(self, rule: str) -> float | None:
        """The score that ``rule`` (``post`` or ``raw``) selects on."""
        return self.post if rule == "post" else self.raw

    def scores(self) -> dict:
        """``{"step", "raw", "post"}``: what the run folder records of it."""
        return {"step": self.step, "raw": self.raw, "post": self.post}


@dataclass(frozen=True)
class Validation:
    """A validation's outcome: ``raw`` and ``post`` are
    :func:`~medcl.training.validation.summarize` of the raw and the post-processed label maps
    (``search`` ``None`` without the search), and the seconds each part took."""

    raw: dict
    search: Search | None
    predict_seconds: float
    postprocessing_seconds: float

    def candidate(self, step: int, class_names: Sequence[str]) -> Candidate:
        if self.search is None:
            return Candidate(step, self.raw["mean_dice"])
        return Candidate(step, self.raw["mean_dice"], self.search.summary["mean_dice"],
                         self.search.choice.to_dict(class_names), dict(self.search.tried))

    def record(self, rule: str, class_names: Sequence[str]) -> dict:
        """The fields of the ``metrics.jsonl`` validation record: ``mean_dice`` (the score
        ``rule`` selects on), ``mean_dice_raw``, ``mean_dice_post``, the per-class Dice of
        both (``dice``, ``dice_post``), the post-processing chosen and the seconds."""
        post = self.search.summary if self.search else None
        return {"mean_dice": self.raw["mean_dice"] if rule == "raw" else post["mean_dice"],
                "mean_dice_raw": self.raw["mean_dice"],
                "mean_dice_post": post and post["mean_dice"], "dice": self.raw["dice"],
                "dice_post": post and post["dice"],
                "postprocessing": self.search and self.search.choice.describe(class_names),
                "predict_seconds": round(self.predict_seconds, 3),
                "postprocessing_seconds": round(self.postprocessing_seconds, 3)}


def validate_checkpoint(predictor: Predictor, cases: list[PreparedCase], *,
                        search: bool) -> Validation:
    """Predict ``cases`` (validation, with dense labels) once; score the label maps raw and,
    with ``search``, after the post-processing chosen on them."""
    started = time.perf_counter()
    predictions, references = predict_cases(predictor, cases)
    predicted = time.perf_counter()
    raw = score(predictions, references, predictor.spec)
    found = search_postprocessing(predictions, references, predictor.spec) if search else None
    return Validation(raw, found, predicted - started, time.perf_counter() - predicted)


class Selection:
    """The best :class:`Candidate` so far under each rule; ``rule`` names the one ``best.pt``
    holds. A candidate replaces a rule's best only when its score is strictly higher (ties keep
    the earlier checkpoint)."""

    def __init__(self, rule: str) -> None:
        if rule not in SELECTION_RULES:
            raise ValueError(f"rule must be one of {SELECTION_RULES}, got {rule!r}")
        self.rule = rule
        self.best: dict[str, Candidate | None] = dict.fromkeys(SELECTION_RULES)

    @property
    def kept(self) -> Candidate | None:
        """The candidate ``best.pt`` holds."""
        return self.best[self.rule]

    def update(self, candidate: Candidate) -> bool:
        """Offer a validated checkpoint; whether it is the new best under ``self.rule``."""
        improved = {}
        for rule, best in self.best.items():
            value = candidate.score(rule)
            improved[rule] = value is not None and (
                best is None or best.score(rule) is None or value > best.score(rule))
            if improved[rule]:
                self.best[rule] = candidate
        return improved[self.rule]

    def state_dict(self) -> dict:
        """Plain data for a checkpoint (loaded with ``weights_only=True``)."""
        return {"rule": self.rule, "best": {rule: c and dataclasses.asdict(c)
                                            for rule, c in self.best.items()}}

    def restore(self, ckpt: dict) -> None:
        """Continue from a checkpoint's ``selection``; a checkpoint from before it holds only
        its best raw score (``best``, ``best_step``), which becomes the raw rule's best."""
        if "selection" in ckpt:
            self.best = {rule: c and Candidate(**c)
                         for rule, c in ckpt["selection"]["best"].items()}
        elif ckpt.get("best") is not None:
            self.best["raw"] = Candidate(ckpt["best_step"], ckpt["best"])
            log.info("checkpoint from before post-processed selection: its best (step %d) is "
                     "known by its raw score only", ckpt["best_step"])

    def record(self) -> dict:
        """What ``RUN/selection.json`` holds: the rule, the checkpoint kept and the best
        checkpoint under each rule, each with both scores."""
        return {"rule": self.rule, "kept": self.kept and self.kept.scores(),
                **{rule: c and c.scores() for rule, c in self.best.items()}}

    def write(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / SELECTION_NAME, json.dumps(self.record(), indent=1) + "\n")


def finish_selection(run_dir: Path, selection: Selection, class_names: Sequence[str],
                     cases: list[PreparedCase], *, device: str) -> None:
    """Write ``run_dir/postprocessing.json`` for the kept checkpoint: the post-processing its
    validation chose (no prediction), or, for a checkpoint validated without the search (a run
    resumed from before it), chosen again on ``cases`` with ``best.pt``."""
    kept = selection.kept
    if kept is None or kept.postprocessing is None:
        select_postprocessing(run_dir, cases, device=device)
        return
    choice = Postprocessing.from_dict(kept.postprocessing, class_names,
                                      source=f"{run_dir}: selection of step {kept.step}")
    write_choice(run_dir, choice, kept.tried, class_names, cases=len(cases), step=kept.step)
