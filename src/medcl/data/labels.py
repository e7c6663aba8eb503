"""The label definition of a dataset: class names, on-disk values, and the ignore value.

Inside medcl every label map uses *class indices* ``0..num_classes-1`` (index 0 is the
background) and one explicit ``ignore_index`` for unlabelled pixels, equal to ``num_classes``.
On disk a dataset may use any integer values (MSCMR: 0, 1, 2, 3 and 4 for unlabelled; MyoPS: 200,
500, ...): :class:`LabelSpec` maps between the two.

The definition is read from a JSON file in the nnU-Net ``dataset.json`` schema::

    {"labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3, "ignore": 4},
     "channel_names": {"0": "LGE"}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcl.errors import ConfigError, DataError

IGNORE_NAME = "ignore"
#: class index of the background (the first class of every label definition)
BACKGROUND = 0


@dataclass(frozen=True)
class LabelSpec:
    """Class names and values of a dataset.

    Attributes:
        class_names: name of each class index; index 0 is the background.
        label_values: on-disk value of each class index.
        ignore_value: on-disk value of unlabelled pixels, or ``None`` if the dataset has none.
        channel_names: name of each input channel (``len`` = ``in_channels``).
    """

    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    ignore_value: int | None = None
    channel_names: tuple[str, ...] = ("image",)

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise ConfigError(f"need a background and at least one class, got {self.class_names}")
        if len(self.class_names) != len(self.label_values):
            raise ConfigError("class_names and label_values differ in length")
        if len(set(self.label_values)) != len(self.label_values):
            raise ConfigError(f"label values are not unique: {self.label_values}")
        if self.ignore_value is not None and self.ignore_value in self.label_values:
            raise ConfigError(f"ignore value {self.ignore_value} is also a class value")
        if not self.channel_names:
            raise ConfigError("a dataset needs at least one input channel")

    @property
    def num_classes(self) -> int:
        """Number of classes including the background."""
        return len(self.class_names)

    @property
    def ignore_index(self) -> int:
        """Class index used in memory for unlabelled pixels (``num_classes``)."""
        return self.num_classes

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    @property
    def foreground_names(self) -> tuple[str, ...]:
        return self.class_names[1:]

    def to_indices(self, values: np.ndarray, *, source: str | os.PathLike = "label map",
                   allow_ignore: bool = True) -> np.ndarray:
        """Map on-disk label values to class indices (``ignore_value`` -> ``ignore_index``).

        Raises:
            DataError: naming ``source``, if a value is neither a class nor (when allowed) the
                ignore value.
        """
        lut_keys = list(self.label_values)
        lut_vals = list(range(self.num_classes))
        if allow_ignore and self.ignore_value is not None:
            lut_keys.append(self.ignore_value)
            lut_vals.append(self.ignore_index)
        present = np.unique(values)
        unknown = sorted(set(present.tolist()) - set(lut_keys))
        if unknown:
            allowed = sorted(lut_keys)
            raise DataError(f"{source}: label values {unknown} are not in the declared set {allowed}")
        out = np.empty(values.shape, dtype=np.int64)
        for key, val in zip(lut_keys, lut_vals):
            out[values == key] = val
        return out

    def to_values(self, indices: np.ndarray) -> np.ndarray:
        """Map class indices back to on-disk values (ignore pixels become the background)."""
        lut = np.asarray(list(self.label_values) + [self.label_values[0]], dtype=np.int64)
        return lut[np.clip(indices, 0, self.num_classes)]

    def to_dict(self) -> dict:
        labels = {name: int(v) for name, v in zip(self.class_names, self.label_values)}
        if self.ignore_value is not None:
            labels[IGNORE_NAME] = int(self.ignore_value)
        return {"labels": labels,
                "channel_names": {str(i): n for i, n in enumerate(self.channel_names)}}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "label definition") -> "LabelSpec":
        """Build from the ``dataset.json`` schema (``labels`` and optional ``channel_names``)."""
        if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
            raise ConfigError(f"{source}: needs a 'labels' object mapping names to values")
        items = []
        ignore = None
        for name, value in data["labels"].items():
            if isinstance(value, (list, tuple)):
                raise ConfigError(f"{source}: region-based label {name!r} is not supported")
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: label {name!r} has a non-integer value {value!r}") from None
            if name == IGNORE_NAME:
                ignore = value
            else:
                items.append((value, name))
        items.sort()
        if not items or items[0][0] != 0:
            raise ConfigError(f"{source}: the background must have value 0")
        channels = data.get("channel_names", {"0": "image"})
        if not isinstance(channels, dict) or not channels:
            raise ConfigError(f"{source}: 'channel_names' must be a non-empty object")
        channel_names = tuple(channels[k] for k in sorted(channels, key=int))
        return cls(class_names=tuple(n for _, n in items), label_values=tuple(v for v, _ in items),
                   ignore_value=ignore, channel_names=channel_names)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LabelSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: label definition file not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))
