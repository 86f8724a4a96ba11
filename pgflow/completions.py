"""In-process wake-ups for result waits: a run that finishes here wakes its waiters at once
instead of leaving them to their next poll."""

from __future__ import annotations

import threading


class Completions:
    """A generation counter under a condition: ``notify`` after final statuses are written,
    ``wait`` (bounded) before polling again."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def wait(self, workflow_id: str, seconds: float) -> None:
        with self._cond:
            start = self._generation
            self._cond.wait_for(lambda: self._generation != start, timeout=seconds)

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
