"""Option types and the training flags, one per :class:`TrainConfig` field."""

from __future__ import annotations

import argparse
import dataclasses

from medcl.training.config import TrainConfig, field_type


def bounded(kind: type, low: float, *, strict: bool = False):
    """An argparse type: ``kind`` and ``> low`` (``strict``) or ``>= low``, else a usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value
    return parse


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; unset flags are absent from the namespace."""
    group = parser.add_argument_group("training configuration")
    for f in dataclasses.fields(TrainConfig):
        base, _optional, is_list = field_type(f)
        kw = {"default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if f.default not in (None, "") and f.default is not dataclasses.MISSING:
            kw["help"] += f" (default: {f.default})"
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = base
            if is_list:
                kw["nargs"] = "+"
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
        group.add_argument(flag(f.name), dest=f.name, **kw)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    base = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    return TrainConfig.from_dict({**base, **given}), given
