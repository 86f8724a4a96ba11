"""Whether this process can reach the database, and waiting for it to come back.

The database being away is never a failure of the work: an operation that meets a lost
connection waits here until the server answers again, however long that takes (a managed
failover commonly takes one to two minutes), then runs again. One thread at a time probes the
server with a fresh connection every half second while the others wait, so the work resumes
within about a second of the server's return, whatever backoff the pool was in.

The log gets one warning when the server stops answering, one line a minute while it stays
away, and one line when it is back (``database_reconnected``), instead of a line per failed
statement or pool connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from .. import metrics
from ..redaction import redact

log = structlog.get_logger("pgflow")

PROBE_INTERVAL = 0.5
REPORT_EVERY = 60.0


class Reachability:
    """The server's reachability as one process sees it.

    ``probe`` connects (raising when it cannot); ``on_back`` runs once when the server answers
    after an outage (the Database replaces its pool, whose own reconnection may be in a long
    backoff). A single failed statement only makes the server *suspect*: if the first probe
    succeeds it was one lost session, and nothing is logged.
    """

    def __init__(self, probe: Callable[[], None], on_back: Callable[[], None], target: str) -> None:
        self._probe = probe
        self._on_back = on_back
        self._target = target
        self._cond = threading.Condition()
        self._probing = False
        self.suspect = False
        self.down_since: float | None = None  # monotonic time of the first failed probe
        self._last_report = 0.0
        self.reason = ""
        self.back_at: float | None = None  # monotonic time the last outage ended
        self._counted_until = 0.0  # outage seconds up to here are in the metrics

    @property
    def away(self) -> bool:
        """True while an outage is known (a probe failed and none has succeeded since)."""
        return self.down_since is not None

    def failed(self, reason: str) -> None:
        """A statement or checkout lost its connection: probe before the next try."""
        with self._cond:
            self.suspect = True
            if self.down_since is None:  # during an outage, the probe's reason is the news
                self.reason = reason

    def wait(self, deadline: float | None = None) -> bool:
        """Block until the server answers (True) or ``deadline`` (monotonic) passes (False)."""
        while True:
            with self._cond:
                while self.suspect and self._probing:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(PROBE_INTERVAL if left is None else min(left, PROBE_INTERVAL))
                if not self.suspect:
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._probing = True
            try:
                ok, reason = self._try_probe()
            finally:
                with self._cond:
                    self._probing = False
            if ok:
                self._came_back()
                return True
            self._still_away(reason)
            pause = PROBE_INTERVAL
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def _try_probe(self) -> tuple[bool, str]:
        try:
            self._probe()
        except Exception as exc:  # any failure to connect is "not yet"
            text = str(exc).strip()
            return False, redact(text.splitlines()[0][:300]) if text else type(exc).__name__
        return True, ""

    def _came_back(self) -> None:
        with self._cond:
            since = self.down_since
            self.down_since = None
            self.suspect = False
            self._cond.notify_all()
        if since is not None:
            self.back_at = time.monotonic()
            metrics.database_away(self.back_at - max(since, self._counted_until))
            metrics.database_reconnected()
            self._on_back()
            log.warning(
                "database_reconnected",
                target=self._target,
                seconds=round(time.monotonic() - since, 1),
            )

    def _still_away(self, reason: str) -> None:
        now = time.monotonic()
        with self._cond:
            first = self.down_since is None
            if first:
                self.down_since = now
            # The outage's seconds are counted as they pass (only one thread probes).
            away = now - max(self.down_since or now, self._counted_until)
            self._counted_until = now
            report = first or now - self._last_report >= REPORT_EVERY
            if report:
                self._last_report = now
            since = self.down_since
            self.reason = reason or self.reason
        metrics.database_away(away)
        if first:
            log.warning(
                "database_unreachable",
                target=self._target,
                reason=self.reason,
                action="work is paused and resumes when the server answers again",
            )
        elif report:
            log.warning(
                "database_still_unreachable",
                target=self._target,
                seconds=round(now - (since or now)),
                reason=self.reason,
            )
