"""The run folder: ``config.json`` (every option, resolved), ``metrics.jsonl`` (one record per
logged step or validation) and ``checkpoints/{best,last}.pt``."""

from __future__ import annotations

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
