"""`midog` command line: one subcommand per stage, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from .. import __version__
from ..errors import MidogError, describe, exit_status, signals_interrupt

# Libraries that log their own warnings (tifffile on odd tags, ...): shown with --verbose only.
LIBRARY_LOGGERS = ("tifffile", "tiffslide", "openslide", "PIL")


class _OwnWarnings(logging.Filter):
    """Python warnings raised by midog's own code (e.g. "torch.compile unavailable")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "midog/" in record.getMessage().split(":", 1)[0].replace("\\", "/")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test's capture, process.py's
    redirection), not the stream that was current when logging was set up."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_handler: logging.Handler | None = None


def setup_logging(verbose: bool = False, quiet: bool = False, debug: bool = False) -> None:
    """midog's own messages to stderr: progress and where outputs went (INFO) by default,
    warnings and errors only with --quiet, debug messages too with --verbose or --debug.
    Other libraries' warnings stay off stderr unless --verbose."""
    global _handler
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    root = logging.getLogger()
    if _handler is not None:  # called again (tests, process.py after the CLI): replace ours only
        root.removeHandler(_handler)
    _handler = _Stderr()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(_handler)
    root.setLevel(level)
    loud = verbose or debug
    logging.getLogger("midog").setLevel(logging.DEBUG if loud else logging.WARNING if quiet else logging.INFO)
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if loud else logging.CRITICAL + 1)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.filters[:] = [] if loud else [_OwnWarnings()]
    warnings_logger.setLevel(logging.NOTSET)


def add_logging_args(parser: argparse.ArgumentParser, default: object = False) -> None:
    """--debug/--verbose/--quiet; a flag a subcommand already defines for itself is left to it."""
    g = parser.add_argument_group("messages")
    flags = [
        (("--debug",), "show tracebacks and debug messages"),
        (("--verbose", "-v"), "debug messages too, library warnings included"),
        (("--quiet", "-q"), "progress hidden: warnings, errors and results only"),
    ]
    for names, text in flags:
        names = tuple(n for n in names if n not in parser._option_string_actions)
        if names and names[0].startswith("--"):
            g.add_argument(*names, action="store_true", default=default, help=text)


# Each module exposes add_cli(subparsers), registering its subcommand with set_defaults(run=...).
# Modules keep heavy imports (torch) inside their run functions so `midog --help` stays fast.
COMMAND_MODULES = [
    "midog.commands.detect",
    "midog.commands.batch",
    "midog.commands.fetch",
    "midog.commands.synth",
    "midog.commands.evaluate",
    "midog.commands.demo",
    "midog.commands.train",
    "midog.commands.export",
    "midog.commands.count",
    "midog.commands.review",
    "midog.commands.labels",
    "midog.commands.experiment",
    "midog.commands.calibrate",
    "midog.commands.adapt",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midog", description=__doc__)
    parser.add_argument("--version", action="version", version=f"midog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    add_logging_args(parser)
    # The same flags after the subcommand (`midog detect --debug ...`); SUPPRESS keeps the
    # value given before it when they are not repeated.
    for subparser in sub.choices.values():
        add_logging_args(subparser, default=argparse.SUPPRESS)
    return parser


def quiet_progress(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--quiet hides every progress bar, whichever option the command names them by
    (--no-progress, or a config's `progress` field)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[args.command]._actions:
        if action.dest == "progress" or action.dest.endswith(".progress"):
            setattr(args, action.dest, False)
        elif action.dest == "no_progress":
            args.no_progress = True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        quiet_progress(parser, args)
    setup_logging(bool(getattr(args, "verbose", False)), bool(getattr(args, "quiet", False)), bool(getattr(args, "debug", False)))
    try:
        with signals_interrupt():
            return int(args.run(args) or 0)
    except MidogError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"midog {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 1))
    except KeyboardInterrupt as exc:
        # Results already written stay; nothing half-written does (the atomic writers).
        print(f"midog {args.command}: {describe(exc)}; results written so far are kept", file=sys.stderr)
        return exit_status(exc)
    except Exception as exc:  # a bug or an environment problem: one line, the traceback with --debug
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"midog {args.command}: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
