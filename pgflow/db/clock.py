"""The database clock's offset on one Database's sessions (``pgflow.testing.Clock`` moves it).

``{schema}.clock()`` adds a per-session offset to the server's time. The offset lives here with
a generation number: a session is brought up to date at its next checkout, with one round trip,
only when the generation changed since it was last applied to that session. Generation 0 means
the offset was never set, and checkouts cost nothing extra.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import psycopg


class SessionClock:
    """The offset (seconds) every session of one Database should carry, and which have it."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.generation = 0
        self._applied: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def set(self, seconds: float) -> None:
        with self._lock:
            self.offset = float(seconds)
            self.generation += 1

    def advance(self, seconds: float) -> None:
        """Move the clock forward (atomic against concurrent advances)."""
        with self._lock:
            self.offset += float(seconds)
            self.generation += 1

    def apply(self, conn: psycopg.Connection[Any], statement: Any) -> None:
        """Bring one session's offset up to date with ``statement`` (query set_clock_offset)."""
        with self._lock:
            generation, offset = self.generation, self.offset
        if self._applied.get(conn) == generation:
            return
        conn.execute(statement, {"offset": repr(offset)})
        with self._lock:
            self._applied[conn] = generation

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and no session known to be up to date."""
        self._lock = threading.Lock()
        self._applied = weakref.WeakKeyDictionary()
