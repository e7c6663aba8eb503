"""The ``medcl`` command line: thin argparse faces over importable functions.

Errors raised on purpose (:class:`~medcl.errors.MedclError`) become one line on stderr. Exit
codes: 0 ok, 1 some cases failed (predict), 2 bad input or option, 130/143 interrupted by
SIGINT/SIGTERM (training saved ``last.pt`` first).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from medcl import __version__
from medcl.cli import (
    annotate,
    convert,
    demo,
    evaluate,
    export,
    postprocess,
    predict,
    scribble,
    train,
)
from medcl.errors import MedclError
from medcl.runtime import distributed

EXIT_USAGE = 2
EXIT_SIGINT = 130
#: the sub-commands, in the order ``medcl --help`` lists them; each module has ``add_parser``
COMMANDS = (train, predict, postprocess, evaluate, export, convert, demo, annotate, scribble)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcl", description="Train medical image segmentation "
                                     "networks from scribbles (MedCL), predict and evaluate.")
    parser.add_argument("--version", action="version", version=f"medcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not distributed.from_env().is_main:  # under torchrun only rank 0 talks
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return args.func(args)
    except MedclError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the wrapped library said
        print(f"medcl {args.command}: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
