"""medcl: scribble-supervised medical image segmentation (MedCL, Zhang & Patel, MIDL 2026)."""

import logging

from .errors import ConfigError, DataError, MedclError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "MedclError", "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
