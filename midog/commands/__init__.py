"""The `midog` command line: one module per subcommand, each parsing its arguments, calling
the library and printing what it did (`cli` builds the parser; shared options in `args`)."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
