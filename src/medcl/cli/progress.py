"""The training progress bar (tqdm, on stderr)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("medcl")


class ProgressBar:
    """tqdm bar fed by the training callback.

    It counts steps, or seconds when the run has a wall-clock budget (whichever limit a
    run stops at is what its ETA should follow, and with a budget that is the time).
    """

    def __init__(self) -> None:
        self.bar = None

    def _open(self, record: dict) -> None:
        from tqdm import tqdm

        by_time = bool(record.get("budget"))
        total = int(record["budget"]) if by_time else record["total"]
        self.by_time = by_time
        self.bar = tqdm(total=total, unit="s" if by_time else "step", dynamic_ncols=True,
                        file=sys.stderr)

    def __call__(self, record: dict) -> None:
        if record["event"] == "step":
            if self.bar is None:
                self._open(record)
            self.bar.n = (min(int(record["elapsed"]), self.bar.total) if self.by_time
                          else record["step"])
            post = {"step": record["step"], "loss": f"{record['loss']:.4f}",
                    "sl/s": f"{record['slices_per_s']:.1f}", "lr": f"{record['lr']:.2e}"}
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif record["event"] == "val" and record["mean_dice"] is not None:
            post = record.get("dice_post")
            dice = ", ".join(f"{k} {v:.3f}" for k, v in (post or record["dice"]).items())
            message = (f"step {record['step']}: validation mean Dice {record['mean_dice_raw']:.4f}"
                       + (f" raw, {record['mean_dice_post']:.4f} after post-processing"
                          if post else "") + f" ({dice})")
            if self.bar is not None:
                self.bar.write(message)
            else:
                log.info(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
