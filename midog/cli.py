"""`midog` command line: one subcommand per stage, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import MidogError

# Each module exposes add_cli(subparsers), registering its subcommand with set_defaults(run=...).
# Modules keep heavy imports (torch) inside their run functions so `midog --help` stays fast.
COMMAND_MODULES = [
    "midog.detect",
    "midog.batch",
    "midog.fetch",
    "midog.synth",
    "midog.evaluation.cli",
    "midog.demo",
    "midog.training.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midog", description=__doc__)
    parser.add_argument("--version", action="version", version=f"midog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MidogError as exc:
        print(f"midog {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"midog {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
