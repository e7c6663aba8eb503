"""medcl: scribble-supervised medical image segmentation (MedCL, Zhang & Patel, MIDL 2026).

The public entry points are importable from here; the package is laid out in wings, lowest
first: ``errors``/``files``/``runtime`` -> ``data`` -> ``models`` -> ``method`` ->
``evaluation`` -> ``inference`` -> ``training`` -> ``demo``/``cli`` (docs/architecture.md).
"""

import logging

from medcl.errors import ConfigError, DataError, MedclError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "MedclError", "Predictor", "TrainConfig", "__version__",
           "evaluate_folders", "predict_path", "train"]

logging.getLogger(__name__).addHandler(logging.NullHandler())

_PUBLIC = {"TrainConfig": "medcl.training.config", "train": "medcl.training.run",
           "Predictor": "medcl.inference.predictor", "predict_path": "medcl.inference.predictor",
           "evaluate_folders": "medcl.evaluation.evaluate"}


def __getattr__(name: str):
    """The public entry points, imported on first use (``import medcl`` stays light)."""
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'medcl' has no attribute {name!r}")
