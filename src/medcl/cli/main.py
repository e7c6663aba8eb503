"""The ``medcl`` command line: thin argparse faces over importable functions.

Errors raised on purpose (:class:`~medcl.errors.MedclError`) become one line on stderr. Exit
codes: 0 ok, 1 some cases failed (predict), 2 bad input or option, 130/143 interrupted by
SIGINT/SIGTERM (training saved ``last.pt`` first).

This module imports nothing heavy: the sub-commands' modules (and torch with them, seconds of
start-up) are imported inside :func:`main`, so that Ctrl-C during those imports ends in one
line and exit code 130 like Ctrl-C at any later point.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from medcl import __version__
from medcl.errors import MedclError

EXIT_USAGE = 2
EXIT_SIGINT = 130
#: the sub-commands, in the order ``medcl --help`` lists them: modules of this package, each
#: with ``add_parser`` and ``run``
COMMANDS = ("train", "predict", "postprocess", "evaluate", "export", "convert", "demo",
            "annotate", "scribble")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcl", description="Train medical image segmentation "
                                     "networks from scribbles (MedCL), predict and evaluate.")
    parser.add_argument("--version", action="version", version=f"medcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"medcl.cli.{name}").add_parser(sub)
    return parser


def _set_up_logging(args: argparse.Namespace) -> None:
    from medcl.runtime import distributed

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not distributed.from_env().is_main:  # under torchrun only rank 0 talks
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    prog = "medcl"
    try:
        args = build_parser().parse_args(argv)
        prog = f"medcl {args.command}"
        _set_up_logging(args)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return args.func(args)
    except MedclError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the wrapped library said
        print(f"{prog}: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:  # Ctrl-C outside training's own handling (start-up included)
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
