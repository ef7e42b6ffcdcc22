"""Stopping on a signal: SIGINT (Ctrl-C), SIGTERM (what Kubernetes and Slurm send on preemption)
and SIGHUP (a closed terminal) all stop a run the same way, with the conventional exit codes
(128 + signal: 130, 143, 129).

The handler raises `Stopped` in the main thread, a KeyboardInterrupt, so everything that already
stops cleanly on Ctrl-C (the row loop, the decode workers, tqdm, Ray's iterator) does the same
for the other two: the batch in flight is finished or dropped, rows written so far are synced,
the final file is written, and the exit code says which signal it was.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by `signum`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def raise_stopped(signum: int, frame) -> None:
    raise Stopped(signum)


def exit_code(exc: KeyboardInterrupt) -> int:
    """130 for a plain KeyboardInterrupt (SIGINT), 128 + the signal for a Stopped."""
    return exc.exit_code if isinstance(exc, Stopped) else 128 + signal.SIGINT


def install() -> None:
    """Route the stop signals to Stopped again (after a library such as Ray replaced a handler)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, raise_stopped)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the stop signals raise Stopped; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
