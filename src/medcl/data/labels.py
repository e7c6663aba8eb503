"""The label definition of a dataset: class names, on-disk values, and the ignore value.

Inside medcl every label map uses *class indices* ``0..num_classes-1`` (index 0 is the
background) and one explicit ``ignore_index`` for unlabelled pixels, equal to ``num_classes``.
On disk a dataset may use any integer values (MSCMR: 0, 1, 2, 3 and 4 for unlabelled; MyoPS: 200,
500, ...): :class:`LabelSpec` maps between the two.

The definition is read from a JSON file in the nnU-Net ``dataset.json`` schema::

    {"labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3, "ignore": 4},
     "channel_names": {"0": "LGE"}}

Optional keys describe label files written in another code and the groupings that evaluation
reports (docs/data.md, ``examples/myops.json``)::

    "label_kinds": {"dense": {"map": {"600": "background"}},
                    "scribble": {"unlabelled": 0, "values": {"background": 3000},
                                 "map": {"600": "background"}, "round": true}},
    "groups": {"Scar": ["scar"], "Edema": ["edema", "scar"]}

A *kind* says how the files of one sort are coded: ``unlabelled`` (the value of unannotated
pixels), ``values`` (class name -> value where the kind differs from ``labels``), ``map``
(further values -> a class: merged classes such as MyoPS's RV under background scribbles) and
``round`` (stored values are rounded to integers first). Without ``label_kinds`` every file uses
``labels`` (and ``ignore``) as the kind ``dense``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcl.errors import ConfigError, DataError

IGNORE_NAME = "ignore"
#: class index of the background (the first class of every label definition)
BACKGROUND = 0
DEFAULT_KIND = "dense"
_KIND_KEYS = {"unlabelled", "values", "map", "round"}


@dataclass(frozen=True)
class LabelKind:
    """How the label files of one kind are coded on disk (see the module docstring).

    Attributes:
        unlabelled: on-disk value of unannotated pixels (-> ``ignore_index``), or ``None``.
        values: class name -> on-disk value, where this kind differs from the dataset's labels.
        map: further on-disk value -> class name (merged classes).
        round: round stored values to the nearest integer before decoding.
    """

    unlabelled: int | None = None
    values: dict[str, int] = field(default_factory=dict)
    map: dict[int, str] = field(default_factory=dict)
    round: bool = False

    def to_dict(self) -> dict:
        return {"unlabelled": self.unlabelled, "values": dict(self.values),
                "map": {str(k): v for k, v in self.map.items()}, "round": self.round}


@dataclass(frozen=True)
class LabelSpec:
    """Class names and values of a dataset.

    Attributes:
        class_names: name of each class index; index 0 is the background.
        label_values: on-disk value of each class index.
        ignore_value: on-disk value of unlabelled pixels, or ``None`` if the dataset has none.
        channel_names: name of each input channel (``len`` = ``in_channels``).
        kinds: the coding of each kind of label file (dense, scribble, ...).
        groups: evaluation groupings, group name -> member classes.
        windows: intensity window ``(low, high)`` of a channel, by channel name (CT in
            Hounsfield units): the channel is clipped to it and scaled to [0, 1] with these
            fixed, per-dataset bounds instead of per-volume statistics.
    """

    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    ignore_value: int | None = None
    channel_names: tuple[str, ...] = ("image",)
    kinds: dict[str, LabelKind] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (low, high) in self.windows.items():
            if name not in self.channel_names or not low < high:
                raise ConfigError(f"intensity window of {name!r} must name a channel "
                                  f"({', '.join(self.channel_names)}) and have low < high, "
                                  f"got ({low}, {high})")
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
        for name, kind in self.kinds.items():
            unknown = sorted((set(kind.values) | set(kind.map.values())) - set(self.class_names))
            if unknown:
                raise ConfigError(f"label kind {name!r} names unknown classes {unknown}; "
                                  f"classes: {', '.join(self.class_names)}")
            keys = [kind.values.get(n, v) for n, v in zip(self.class_names, self.label_values)]
            keys += [*kind.map, *([] if kind.unlabelled is None else [kind.unlabelled])]
            if len(set(keys)) != len(keys):
                raise ConfigError(f"label kind {name!r} gives one value two meanings: {keys}")
        for name, members in self.groups.items():
            unknown = sorted(set(members) - set(self.class_names))
            if unknown or not members or name in self.class_names:
                raise ConfigError(f"grouping {name!r} names unknown classes {unknown or '[]'} "
                                  f"or a class's own name; classes: {', '.join(self.class_names)}")

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

    def kind(self, name: str | None = None) -> LabelKind:
        """The coding of label files of kind ``name`` (default: ``dense``, from ``labels``)."""
        name = name or DEFAULT_KIND
        if name in self.kinds:
            return self.kinds[name]
        if name == DEFAULT_KIND:
            return LabelKind(unlabelled=self.ignore_value)
        raise ConfigError(f"label kind {name!r} is not declared; declared: "
                          f"{', '.join(sorted(self.kinds)) or DEFAULT_KIND}")

    def value_table(self, kind: str | None = None, *, allow_ignore: bool = True) -> dict[int, int]:
        """On-disk value -> class index (or ``ignore_index``) for files of ``kind``."""
        code = self.kind(kind)
        table = {int(code.values.get(n, v)): k
                 for k, (n, v) in enumerate(zip(self.class_names, self.label_values))}
        table.update({int(v): self.class_names.index(n) for v, n in code.map.items()})
        if allow_ignore and code.unlabelled is not None:
            table[int(code.unlabelled)] = self.ignore_index
        return table

    def to_indices(self, values: np.ndarray, *, source: str | os.PathLike = "label map",
                   allow_ignore: bool = True, kind: str | None = None) -> np.ndarray:
        """Map on-disk label values of ``kind`` to class indices (unlabelled -> ``ignore_index``).

        Raises:
            DataError: naming ``source``, if a value is not in the kind's code.
        """
        table = self.value_table(kind, allow_ignore=allow_ignore)
        lut_keys, lut_vals = list(table), list(table.values())
        present = np.unique(values)
        unknown = sorted(set(present.tolist()) - set(lut_keys))
        if unknown:
            allowed = sorted(lut_keys)
            raise DataError(f"{source}: label values {unknown} are not in the declared set "
                            f"{allowed} of label kind {kind or DEFAULT_KIND!r}")
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
        out = {"labels": labels,
               "channel_names": {str(i): n for i, n in enumerate(self.channel_names)}}
        if self.kinds:
            out["label_kinds"] = {n: k.to_dict() for n, k in self.kinds.items()}
        if self.groups:
            out["groups"] = {n: list(m) for n, m in self.groups.items()}
        if self.windows:
            out["intensity"] = {n: {"window": list(w)} for n, w in self.windows.items()}
        return out

    def channel_windows(self) -> tuple[tuple[float, float] | None, ...]:
        """The intensity window of each channel index, ``None`` where it has none."""
        return tuple(self.windows.get(name) for name in self.channel_names)

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
                raise ConfigError(f"{source}: label {name!r} has a non-integer value "
                                  f"{value!r}") from None
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
        try:
            return cls(class_names=tuple(n for _, n in items),
                       label_values=tuple(v for v, _ in items), ignore_value=ignore,
                       channel_names=channel_names,
                       kinds=_parse_kinds(data.get("label_kinds", {}), source),
                       groups=_parse_groups(data.get("groups", {}), source),
                       windows=_parse_windows(data.get("intensity", {}), source))
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from None

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


def _as_int(value, what: str, source: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {what} has a non-integer value {value!r}") from None


def _parse_kinds(data, source: str) -> dict[str, LabelKind]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: 'label_kinds' must be an object of kind name -> code")
    kinds = {}
    for name, code in data.items():
        if not isinstance(code, dict) or set(code) - _KIND_KEYS:
            raise ConfigError(f"{source}: label kind {name!r} must be an object with keys "
                              f"{sorted(_KIND_KEYS)}")
        unlabelled = code.get("unlabelled")
        kinds[name] = LabelKind(
            unlabelled=(None if unlabelled is None
                        else _as_int(unlabelled, f"{name}.unlabelled", source)),
            values={n: _as_int(v, f"{name}.values.{n}", source)
                    for n, v in code.get("values", {}).items()},
            map={_as_int(v, f"{name}.map key", source): n for v, n in code.get("map", {}).items()},
            round=bool(code.get("round", False)))
    return kinds


def _parse_groups(data, source: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict) or not all(isinstance(m, list) for m in data.values()):
        raise ConfigError(f"{source}: 'groups' must map a group name to a list of class names")
    return {name: tuple(members) for name, members in data.items()}


def _parse_windows(data, source: str) -> dict[str, tuple[float, float]]:
    """``{"CT": {"window": [-175, 250]}}`` -> ``{"CT": (-175.0, 250.0)}``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: 'intensity' must map a channel name to "
                          '{"window": [low, high]}')
    windows = {}
    for name, spec in data.items():
        window = spec.get("window") if isinstance(spec, dict) else None
        if (not isinstance(window, list) or len(window) != 2
                or not all(isinstance(v, (int, float)) for v in window)):
            raise ConfigError(f"{source}: intensity of {name!r} needs \"window\": [low, high] "
                              f"in the image's units, got {spec!r}")
        windows[name] = (float(window[0]), float(window[1]))
    return windows
