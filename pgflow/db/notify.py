"""Wait for a NOTIFY about one key (a workflow id) on one dedicated LISTEN connection per process.

``recv`` waits for a message to its workflow, ``get_event`` for an event of a workflow, and a
cancelled workflow is woken wherever it waits. Each waiter registers an :class:`threading.Event`
for its ``(channel, payload)`` before it looks at the table, so a NOTIFY that lands between the
look and the wait is never lost. After every (re)connection every waiter is woken once, because
notifications sent while disconnected are gone.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import psycopg
import structlog

from ..redaction import redact
from .pool import Database

log = structlog.get_logger("pgflow")

# How long a waiter sleeps without news before it looks again anyway: a safety net for a lost
# connection, not the way messages arrive.
RECHECK_CONNECTED = 5.0
RECHECK_DISCONNECTED = 0.5


def queue_channel(schema: str) -> str:
    """Channel woken when queued work appears (payload: the queue name); workers LISTEN."""
    return f"pgflow_{schema}"


def message_channel(schema: str) -> str:
    """Channel woken by ``send`` (payload: the destination workflow id) and by cancellation."""
    return f"pgflow_{schema}_msg"


def event_channel(schema: str) -> str:
    """Channel woken by ``set_event`` (payload: the publishing workflow id)."""
    return f"pgflow_{schema}_evt"


class Notifications:
    """One LISTEN connection of this process for the message and event channels of a schema."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.channels = (message_channel(db.schema), event_channel(db.schema))
        self.connected = threading.Event()
        self.pid = os.getpid()  # a forked child builds its own
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], set[threading.Event]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pgflow-notify", daemon=True)
                self._thread.start()
        # The first look must happen after LISTEN, or a NOTIFY sent just before is missed.
        self.connected.wait(self.db.connect_timeout)

    @contextlib.contextmanager
    def watch(self, channel: str, key: str) -> Iterator[threading.Event]:
        """An event set whenever ``channel`` is notified with ``key`` (and after reconnects).

        Clear it, look at the table, then wait on it: nothing falls between.
        """
        self._ensure_started()
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault((channel, key), set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                found = self._waiters.get((channel, key))
                if found is not None:
                    found.discard(event)
                    if not found:
                        del self._waiters[(channel, key)]

    def recheck_after(self) -> float:
        """Seconds a waiter may wait without news before it looks again."""
        return RECHECK_CONNECTED if self.connected.is_set() else RECHECK_DISCONNECTED

    def wake(self, channel: str, key: str) -> None:
        """Wake this process's waiters on ``key`` now, as the NOTIFY will a moment later."""
        self._wake(channel, key)

    def _wake(self, channel: str, key: str) -> None:
        with self._lock:
            for event in self._waiters.get((channel, key), ()):
                event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set() and os.getpid() == self.pid:
            try:
                conn = self.db.connect()
            except Exception as exc:
                # An outage is logged once, by the Database (pgflow/db/outage.py).
                log.debug("listen_connect_failed", error=str(exc)[:200])
                self._stop.wait(delay)
                delay = min(delay * 2, 0.5)
                continue
            delay = 0.1
            try:
                with conn:
                    for channel in self.channels:
                        conn.execute(self.db.queries.with_identifiers("listen", channel=channel))
                    self.connected.set()
                    self._wake_all()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=256):
                            self._wake(note.channel, note.payload)
            except psycopg.Error as exc:
                log.info("listen_connection_lost", error=redact(str(exc).splitlines()[0][:200]))
                self.db.lost(str(exc))
            finally:
                self.connected.clear()
                self._wake_all()
