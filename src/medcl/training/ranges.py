"""The valid ranges of numeric options, declared beside each option of
:class:`~medcl.training.config.TrainConfig` (``valid=POSITIVE``) and checked on construction, so a
bad value is refused before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from medcl.errors import ConfigError


@dataclass(frozen=True)
class Interval:
    """The valid values of a numeric option (each value of a list option): from ``low`` to
    ``high`` (``None``: unbounded), the ends included unless ``low_open``/``high_open``. NaN and
    infinity are never valid."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value < self.high or (not self.high_open and value == self.high)

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(value: float | None) -> str:
    """``180`` for 180.0, ``0.5`` for 0.5 (no exponent for large integers)."""
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


POSITIVE = Interval(0, low_open=True)
NON_NEGATIVE = Interval(0)
AT_LEAST_ONE = Interval(1)
PROBABILITY = Interval(0, 1)
BELOW_ONE = Interval(0, 1, high_open=True)
SHARE = Interval(0, 1, low_open=True)


def check_field_value(f: dataclasses.Field, value) -> None:
    """A field's value is one of its ``choices`` and inside its ``valid`` :class:`Interval`
    (every value of a list); ``None`` (an optional field left unset) passes.

    Raises:
        ConfigError: naming the field, the value and the valid values.
    """
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{f.name}={value!r} is not valid; choose from {', '.join(choices)}")
    valid: Interval | None = f.metadata.get("valid")
    if valid is None or value is None:
        return
    values = value if isinstance(value, list) else [value]
    if all(v in valid for v in values):
        return
    finite = "finite and " if valid.high is None and isinstance(values[0], float) else ""
    every = "every value of " if isinstance(value, list) else ""
    raise ConfigError(f"{every}{f.name} must be {finite}{valid}, got {value}")
