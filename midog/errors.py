"""The one exception type users see: a short message that names the file and the problem;
and how a run ends on a signal (below)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class MidogError(Exception):
    """An error caused by the user's input (file, option), reported without a traceback."""


def shown(name: object) -> str:
    """`name` for a message: control characters (a newline in a file name would start a
    forged line of the log) written as escapes, everything else as is."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ImageError(MidogError):
    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{shown(self.path)}: {problem}")


class UsageError(MidogError):
    """A bad option or an unusable output, found before any work: exit status 2."""

    exit_status = 2


class TimeBudgetError(ImageError):
    """One image ran past its time budget; the next image still runs."""


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or PyTorch's allocator failing (a RuntimeError from its C++ side) under a
    memory ceiling."""
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def image_error_line(image: object, exc: BaseException) -> str:
    """One line for any exception raised while working on one image: the MidogError's own
    text, or "<file>: <ExceptionType>: <message>" for an unexpected one."""
    image = shown(image)
    if isinstance(exc, MidogError):
        return str(exc)
    if is_out_of_memory(exc):
        return f"{image}: out of memory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{image}: {exc.strerror}" + (f" ({shown(exc.filename)})" if exc.filename and shown(exc.filename) != image else "")
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{image}: {type(exc).__name__}" + (f": {message}" if message else "")


class WriteError(MidogError):
    """An output could not be written (disk full, read-only, I/O error): the atomic writer
    left nothing half-written and the outputs written before are untouched."""

    def __init__(self, path: object, exc: OSError) -> None:
        import errno

        self.path = str(path)
        self.errno = exc.errno
        code = errno.errorcode.get(exc.errno or 0)
        cause = (exc.strerror or str(exc)) + (f" ({code})" if code else "")
        super().__init__(f"{shown(self.path)}: cannot write it: {cause}; earlier outputs are kept")

    @property
    def disk_full(self) -> bool:
        """No later output can be written either: the run should stop."""
        import errno

        return self.errno in (errno.ENOSPC, errno.EDQUOT)


# Signals --------------------------------------------------------------------
#
# How a run ends on SIGTERM or SIGINT: as an exception in the main thread, so every `finally`
# and every atomic writer's clean-up runs (no temporary or half-written file stays), results
# already written are kept, and the command exits with 128 + the signal's number (143, 130),
# as a shell reports a process killed by that signal.
#
# SIGINT already raises KeyboardInterrupt; SIGTERM (what `docker stop`, a batch scheduler or
# the platform's time limit sends) would otherwise end the process at once, with no clean-up.
# `Interrupted` subclasses KeyboardInterrupt so that every handler written for Ctrl-C (the
# batch report, the atomic writers) handles both.


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_status` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


_received: int | None = None  # the last signal a handler of ours took


def exit_status(exc: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for SIGINT. Libraries that catch the exception in their own
    waits (Ray's) raise a plain KeyboardInterrupt in its place: the signal our handler
    took still decides."""
    signum = getattr(exc, "signum", None) or _received or signal.SIGINT
    return 128 + int(signum)


def describe(exc: KeyboardInterrupt) -> str:
    """"stopped by SIGTERM" (or SIGINT), whichever exception carried it here."""
    signum = getattr(exc, "signum", None) or _received or signal.SIGINT
    return f"stopped by {signal.Signals(signum).name}"


@contextmanager
def signals_interrupt(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the signals raise `Interrupted` in the main thread; the previous
    handlers come back afterwards. Outside the main thread (no handlers can be set there),
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        global _received
        _received = signum
        # Once: a second signal during the clean-up must not cut the clean-up short.
        for s in signums:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    global _active, _received
    _received = None
    previous = {s: signal.signal(s, handler) for s in signums}
    outer, _active = _active, (signums, handler)
    try:
        yield
    finally:
        _active = outer
        for s, h in previous.items():
            signal.signal(s, h)


_active: tuple[tuple[int, ...], Any] | None = None  # the signals and handler of the innermost block


def reclaim_signals() -> None:
    """Install this run's handlers again after a library replaced them: Ray's driver sets a
    C++ handler for SIGTERM on `ray.init` that aborts the process (exit -6) with no clean-up
    and no report. Does nothing outside a `signals_interrupt` block or the main thread."""
    if _active is None or threading.current_thread() is not threading.main_thread():
        return
    signums, handler = _active
    for s in signums:
        if signal.getsignal(s) is not signal.SIG_IGN:  # not while the clean-up of a first signal runs
            signal.signal(s, handler)
