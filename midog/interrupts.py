"""How a run ends on SIGTERM or SIGINT: as an exception in the main thread, so every `finally`
and every atomic writer's clean-up runs (no temporary or half-written file stays), results
already written are kept, and the command exits with 128 + the signal's number (143, 130),
as a shell reports a process killed by that signal.

SIGINT already raises KeyboardInterrupt; SIGTERM (what `docker stop`, a batch scheduler or
the platform's time limit sends) would otherwise end the process at once, with no clean-up.
`Interrupted` subclasses KeyboardInterrupt so that every handler written for Ctrl-C (the
batch report, the atomic writers) handles both.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


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
