"""The ``medcl`` command line: one module per sub-command (``add_parser`` + ``run``), each a thin
face over importable functions; :mod:`medcl.cli.main` builds the parser and turns errors into
one line and an exit code."""

from medcl.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
