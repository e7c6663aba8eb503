"""The project's exception types.

Library code raises these with a message that names the file or value at fault; the CLI turns
them into one line on stderr and exit code 2.
"""


class MedclError(Exception):
    """Base class of every error medcl raises on purpose."""


class DataError(MedclError):
    """A file or folder of input data is missing, unreadable or inconsistent."""


class ConfigError(MedclError):
    """An option or configuration value is invalid."""
