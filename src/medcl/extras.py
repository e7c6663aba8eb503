"""Optional libraries: import one, or fail with one line naming the pip extra that installs it.

The core of medcl needs only its required dependencies; a feature that needs more (DICOM input,
the HTML report's plots) imports its library through :func:`require`, so a missing library is a
:class:`~medcl.errors.ConfigError` (exit code 2 in the CLI) instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medcl.errors import ConfigError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module``; if it is missing, raise naming ``feature`` and the extra to install.

    Raises:
        ConfigError: e.g. "DICOM input needs SimpleITK, which is not installed:
            pip install 'medcl[dicom]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{feature} needs {module}, which is not installed: "
                          f"pip install 'medcl[{extra}]'") from None
