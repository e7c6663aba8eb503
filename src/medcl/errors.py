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


class WriteError(DataError, OSError):
    """An output could not be written (full disk, read-only folder); also an ``OSError``."""


class Interrupted(MedclError):
    """Training stopped on a signal after saving its state; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CasesFailed(MedclError):
    """Some cases of a batch failed after every other case was processed (exit code 1).

    Attributes:
        failures: case id -> one-line reason.
        written: the files that were written.
    """

    exit_code = 1

    def __init__(self, failures: dict[str, str], written: list) -> None:
        super().__init__(f"{len(failures)} of {len(failures) + len(written)} cases failed: "
                         + "; ".join(f"{case}: {reason}" for case, reason in failures.items()))
        self.failures = failures
        self.written = written
