"""The ``blindsum`` command, one module per command group (``*_cmds``)."""

from blindsum_app.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
