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


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_status` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def exit_status(exc: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for SIGINT (a plain KeyboardInterrupt)."""
    return int(getattr(exc, "exit_status", 128 + signal.SIGINT))


@contextmanager
def signals_interrupt(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the signals raise `Interrupted` in the main thread; the previous
    handlers come back afterwards. Outside the main thread (no handlers can be set there),
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        # Once: a second signal during the clean-up must not cut the clean-up short.
        for s in signums:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
