"""Where to scribble next: the model's uncertainty per slice, from its class probabilities.

A voxel's uncertainty is the entropy of its class probabilities divided by ``log(K)`` (0: the
model is certain, 1: all ``K`` classes equally likely); a slice's is the mean over its voxels.
The slice with the highest value is where new scribbles are expected to help most.
"""

from __future__ import annotations

import numpy as np

#: probabilities are clipped to this before the logarithm (0 * log 0 counts as 0)
PROB_FLOOR = 1e-12


def voxel_entropy(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy ``(X, Y, Z)`` in ``[0, 1]`` of probabilities ``(X, Y, Z, K)``."""
    num_classes = probs.shape[-1]
    if num_classes < 2:
        raise ValueError(f"need probabilities of at least 2 classes, got shape {probs.shape}")
    p = np.clip(probs.astype(np.float64), PROB_FLOOR, 1.0)
    return -(probs * np.log(p)).sum(axis=-1) / np.log(num_classes)


def slice_uncertainty(probs: np.ndarray) -> list[float]:
    """Mean normalised entropy of each slice along ``Z`` of probabilities ``(X, Y, Z, K)``."""
    return [float(v) for v in voxel_entropy(probs).mean(axis=(0, 1))]


def rank_slices(uncertainty: list[float]) -> list[int]:
    """Slice indices from the most to the least uncertain (ties: lower index first)."""
    return sorted(range(len(uncertainty)), key=lambda z: (-uncertainty[z], z))


def case_summary(uncertainty: list[float]) -> dict:
    """``{"worst_slice", "worst", "mean"}`` of one case's per-slice uncertainty."""
    if not uncertainty:
        return {"worst_slice": None, "worst": None, "mean": None}
    worst = rank_slices(uncertainty)[0]
    return {"worst_slice": worst, "worst": uncertainty[worst],
            "mean": float(np.mean(uncertainty))}
