"""LISTEN for enqueue notifications on a dedicated connection, reconnecting forever."""

from __future__ import annotations

import threading
import time

import psycopg
import structlog

from ..db.pool import Database
from ..redaction import redact

log = structlog.get_logger("pgflow")


class Listener:
    """Sets ``wake`` whenever a NOTIFY arrives on the schema's channel, and after every
    (re)connection (anything enqueued while disconnected is then claimed at once)."""

    def __init__(
        self, db: Database, channel: str, wake: threading.Event, stop: threading.Event
    ) -> None:
        self.db, self.channel, self.wake, self.stop = db, channel, wake, stop
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgflow-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while not self.stop.is_set():
            try:
                conn = psycopg.connect(
                    self.db.url,
                    autocommit=True,
                    application_name=self.db.application_name,
                    connect_timeout=5,
                )
            except psycopg.Error as exc:
                # An outage is logged once, by the Database (pgflow/db/outage.py).
                log.debug("listen_connect_failed", error=redact(str(exc).splitlines()[0][:200]))
                self.stop.wait(delay)
                delay = min(delay * 2, 0.5)
                continue
            delay = 0.1
            try:
                with conn:
                    # The channel is an identifier: quoted by psycopg.sql, never formatted raw.
                    conn.execute(self.db.queries.with_identifiers("listen", channel=self.channel))
                    self.connected.set()
                    self.wake.set()
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=64):
                            self.wake.set()
            except psycopg.Error as exc:
                self.connected.clear()
                log.info("listen_connection_lost", error=redact(str(exc).splitlines()[0][:200]))
                self.db.lost(str(exc))  # the worker loop waits for the server, not claims
                time.sleep(0.05)
