"""Signal handling for the supervisor: handlers only record the signal and wake the loop."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)


class SignalQueue:
    """Records signals for the main loop; a self-pipe makes ``select`` return at once."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def install(self) -> None:
        for sig in HANDLED:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.pending.append(signum)
        try:  # noqa: SIM105 - a signal handler: nothing more than needed
            os.write(self.write_fd, b"!")
        except OSError:
            pass  # the pipe is full: the loop will wake anyway

    def drain_pipe(self) -> None:
        try:
            while os.read(self.read_fd, 512):
                pass
        except OSError:
            pass

    def pop(self) -> int | None:
        try:
            return self.pending.popleft()
        except IndexError:
            return None

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def reset_in_child() -> None:
    """A forked worker process takes default handlers (the worker installs its own)."""
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_DFL)


def block_all() -> set[int | signal.Signals]:
    """Block the handled signals (around fork) and return the previous mask."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def restore(mask: set[int | signal.Signals]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
