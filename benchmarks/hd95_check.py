"""medcl's two HD95 conventions against the libraries that define them, on random 3D blobs.

    pip install --no-deps --target /tmp/refs monai medpy    # --no-deps: never another torch
    PYTHONPATH=/tmp/refs:src python benchmarks/hd95_check.py [--pairs 40]

For each pair of random masks (1-3 overlapping ellipsoids each, some touching the array border,
anisotropic spacing drawn from 0.8-5 mm), compares ``medcl.evaluation.metrics.hd95`` with
``convention="monai"`` to ``monai.metrics.compute_hausdorff_distance(percentile=95)`` and with
``convention="medpy"`` to ``medpy.metric.binary.hd95``, and prints the largest absolute
differences and how far the two conventions lie apart. A reference library that is not
installed is left out.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np

from medcl.evaluation.metrics import hd95

SHAPE = (40, 36, 10)
SPACINGS = (0.8, 1.25, 1.5, 5.0)
RADIUS = (3, 9)
Z_STRETCH = 3  # ellipsoids are flatter along Z, so some reach the first or last slice


def blob(rng: np.random.Generator) -> np.ndarray:
    grid = np.indices(SHAPE)
    mask = np.zeros(SHAPE, bool)
    for _ in range(rng.integers(1, 4)):
        centre = rng.integers(8, 28, size=3)
        centre[2] = min(centre[2], SHAPE[2] - 1)
        radius = rng.integers(*RADIUS)
        mask |= ((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2
                 + ((grid[2] - centre[2]) * Z_STRETCH) ** 2) < radius ** 2
    return mask


def monai_hd95(pred: np.ndarray, gt: np.ndarray, spacing) -> float:
    import torch
    from monai.metrics import compute_hausdorff_distance

    def tensor(mask):
        return torch.from_numpy(mask[None, None].astype(np.float32))

    return float(compute_hausdorff_distance(tensor(pred), tensor(gt), include_background=True,
                                            percentile=95, spacing=list(spacing))[0, 0])


def medpy_hd95(pred: np.ndarray, gt: np.ndarray, spacing) -> float:
    from medpy.metric.binary import hd95 as reference

    return float(reference(pred, gt, voxelspacing=spacing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    references = {name: fn for name, fn in (("monai", monai_hd95), ("medpy", medpy_hd95))
                  if importlib.util.find_spec(name) is not None}
    errors = {name: [] for name in references}
    gaps = []
    for _ in range(args.pairs):
        pred, gt = blob(rng), blob(rng)
        spacing = tuple(float(s) for s in rng.choice(SPACINGS, size=3))
        ours = {c: hd95(pred, gt, spacing, convention=c) for c in ("medpy", "monai")}
        gaps.append(ours["monai"] - ours["medpy"])
        for name, reference in references.items():
            errors[name].append(abs(ours[name] - reference(pred, gt, spacing)))
    for name, errs in errors.items():
        print(f"{args.pairs} pairs: max |medcl {name} - {name}| = {max(errs):.2e} mm")
    for name in ("monai", "medpy"):
        if name not in references:
            print(f"{name} not installed: not compared")
    gaps = np.asarray(gaps)
    print(f"monai - medpy convention: mean {gaps.mean():.2f} mm, range {gaps.min():.2f} .. "
          f"{gaps.max():.2f} mm, monai larger in {(gaps > 0).sum()} of {len(gaps)} pairs")


if __name__ == "__main__":
    main()
