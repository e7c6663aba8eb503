"""Post-processing of predicted label maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep, for each foreground class, only its largest 3D connected component.

    Args:
        labels: class indices ``(X, Y, Z)``; 0 is the background.
        num_classes: number of classes including the background.

    Returns:
        A copy where voxels of the smaller components become background (0).
    """
    out = labels.copy()
    structure = ndimage.generate_binary_structure(3, 1)
    for k in range(1, num_classes):
        comp, count = ndimage.label(labels == k, structure=structure)
        if count > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[(comp != 0) & (comp != sizes.argmax())] = 0
    return out
