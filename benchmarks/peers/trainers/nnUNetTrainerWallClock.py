"""nnU-Net v2's default trainer under a wall-clock budget, for the side-by-side benchmark.

Runs inside nnU-Net's own venv (``benchmarks/peers/make_nnunet_venv.sh``); found by nnU-Net
through ``nnUNet_extTrainer`` (``-tr nnUNetTrainerWallClock``); nnU-Net itself is unmodified.

Departures from ``nnUNetTrainer``, all forced by a budget in minutes instead of 1000 epochs:

* the poly learning-rate schedule runs over wall-clock time: before every iteration
  ``lr = initial_lr * (1 - elapsed / budget) ** 0.9`` (nnU-Net: the same formula over epochs);
* training stops at the first iteration that starts after the budget, inside an epoch if need
  be; ``checkpoint_final.pth`` is written as usual;
* an epoch is ``ITERATIONS_PER_EPOCH`` training and ``VAL_ITERATIONS_PER_EPOCH`` validation
  iterations (nnU-Net: 250 and 50) so that its logging, pseudo-Dice and checkpoints happen a few
  times within the budget; nnU-Net's per-epoch validation iterations count in the budget, as
  medcl's validation does;
* seeds: python, numpy and torch are seeded from ``MEDCL_PEER_SEED`` (nnU-Net does not seed;
  its augmentation workers draw their own seeds, so runs are not bit-reproducible);
* the final validation of the fold (``perform_actual_validation``) is left out: it does not
  change the model, the benchmark scores the test set itself, and it would cost minutes.

The budget is ``MEDCL_PEER_MINUTES`` (float, required); the clock starts when the data loaders
are up (``on_train_start``), as medcl's starts after its data is loaded.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

BUDGET_ENV = "MEDCL_PEER_MINUTES"
SEED_ENV = "MEDCL_PEER_SEED"
ITERATIONS_PER_EPOCH = 25
VAL_ITERATIONS_PER_EPOCH = 5
POLY_EXPONENT = 0.9           # nnU-Net's PolyLRScheduler exponent
SECONDS_PER_MINUTE = 60.0
MAX_EPOCHS = 1_000_000        # the budget ends training, never the epoch count


class nnUNetTrainerWallClock(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if BUDGET_ENV not in os.environ:
            raise RuntimeError(f"set {BUDGET_ENV} to the training budget in minutes")
        self.budget_s = float(os.environ[BUDGET_ENV]) * SECONDS_PER_MINUTE
        seed = int(os.environ.get(SEED_ENV, "0"))
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.num_iterations_per_epoch = ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = VAL_ITERATIONS_PER_EPOCH
        self.num_epochs = MAX_EPOCHS
        self.started = None
        self.iterations_done = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def on_train_start(self):
        super().on_train_start()
        self.started = time.monotonic()

    def train_step(self, batch: dict) -> dict:
        fraction = min(self.elapsed() / self.budget_s, 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.initial_lr * (1.0 - fraction) ** POLY_EXPONENT
        self.iterations_done += 1
        return super().train_step(batch)

    def run_training(self):
        # nnUNetTrainer.run_training's epoch structure, ended by the budget instead of num_epochs
        self.on_train_start()
        while self.elapsed() < self.budget_s:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            while not train_outputs or (len(train_outputs) < self.num_iterations_per_epoch
                                        and self.elapsed() < self.budget_s):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.print_to_log_file(f"wall-clock budget spent: {self.iterations_done} iterations, "
                               f"{self.current_epoch} epochs, {self.elapsed():.1f} s")
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation left out (benchmark scores the test set)")
