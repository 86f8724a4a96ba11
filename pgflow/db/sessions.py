"""pgflow's sessions and the pool that keeps them, below the Database that uses them.

A session carries pgflow's settings (``session_options``) and one cursor for the named
statements; the pool hands out the most recently returned session first and gives back every
session idle past its timeout; ``ConnectAttempts`` keeps the server's reason for the last
refused connection, which psycopg_pool only logs.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

if TYPE_CHECKING:
    from typing_extensions import Self

# Settings of pgflow's own sessions (see session_options). Transaction steps and reports
# put the server's default back for one transaction (query allow_scans).
PGFLOW_SESSION_OPTIONS = "-c enable_seqscan=off -c jit=off"


def session_options(url: str) -> str:
    """Session settings: the URL's (or PGOPTIONS') ``options``, then pgflow's own.

    enable_seqscan=off: every statement pgflow runs finds its rows through an index, and
    each is prepared once per session. A plan prepared while a table was tiny (a seq scan
    is cheapest on one page) would otherwise be kept as the table grows until the next
    ANALYZE: measured, a 10-step workflow went from 5 ms to 180 ms and a claim from 1 ms
    to 56 ms after 200,000 rows arrived. A statement with no index to use still scans.

    jit=off: a scan that had to happen anyway carries the planner's huge "disabled" cost,
    which would otherwise cross jit_above_cost and compile a short query (tens of ms).
    """
    try:
        given = conninfo_to_dict(url).get("options")
    except psycopg.Error:
        given = None
    if given is None:
        given = os.environ.get("PGOPTIONS")
    return " ".join(filter(None, [str(given) if given else "", PGFLOW_SESSION_OPTIONS]))


class _QuietPoolLog(logging.Filter):
    """Drops psycopg_pool's lines about pgflow's pools: during an outage it logs every failed
    reconnection and every discarded session (dozens of lines); pgflow logs the outage once,
    a line a minute while it lasts, and the return (pgflow/db/outage.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:
            return True
        return "pgflow" not in text


def quiet_pool_log() -> None:
    """Install _QuietPoolLog on psycopg_pool's logger, once per process."""
    logger = logging.getLogger("psycopg.pool")
    if not any(isinstance(f, _QuietPoolLog) for f in logger.filters):
        logger.addFilter(_QuietPoolLog())


class MostRecentFirst(deque):  # type: ignore[type-arg]
    """The pool's idle connections, the one returned last handed out first (LIFO).

    psycopg_pool hands out the longest-idle connection (FIFO), so one thread running steps
    one after another alternates between every pooled session, each with cold caches on
    both sides of the socket. Measured: a step checkpoint cost 720 µs with FIFO and 590 µs
    with LIFO, against a 410-450 µs INSERT round trip (benchmarks, phase 5). The ones left at
    the far end idle long enough for SweepingPool's sweep to close them.
    """

    def append(self, conn: Any) -> None:
        conn.idle_since = time.monotonic()
        self.appendleft(conn)


class ConnectAttempts:
    """What the last attempt to open a session of one Database said (pool or direct).

    psycopg_pool opens sessions in its own thread and, when it cannot, only logs why; a
    caller waiting for one gets a bare PoolTimeout. The pool's sessions report here, so the
    error names the server's reason ("too many clients already", "password authentication
    failed ...")."""

    def __init__(self) -> None:
        self.last_error: psycopg.Error | None = None  # None after a success
        self.connected_once = False

    def failed(self, exc: psycopg.Error) -> None:
        self.last_error = exc

    def succeeded(self) -> None:
        self.last_error = None
        self.connected_once = True


def closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """An idle pooled connection has nothing to read: readable means the server said goodbye
    (it restarted, pg_terminate_backend, an idle timeout). One poll, no round trip; such a
    connection is skipped at checkout instead of failing the statement run on it."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class Session(psycopg.Connection[dict[str, Any]]):
    """pgflow's session: keeps one cursor for the named statements it runs.

    A cursor adapts parameters with caches of its own (which dumper for which Python type);
    ``Connection.execute`` makes a new cursor per statement, so every statement started them
    cold. Measured on the benchmark VM: 40-45 µs of client CPU per statement (an enqueue cost
    ~300 µs of CPU in all). Every caller consumes a result before its next statement on the
    same session, so one cursor per session is enough.
    """

    _named: psycopg.Cursor[dict[str, Any]] | None = None
    idle_since = 0.0  # when it last went back to the pool (time.monotonic())
    # Each Database uses a subclass whose attempts are its own (see ConnectAttempts).
    attempts: ConnectAttempts | None = None

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            if cls.attempts is not None:
                cls.attempts.failed(exc)
            raise
        if cls.attempts is not None:
            cls.attempts.succeeded()
        return conn

    def run_named(self, query: Any, params: Any) -> psycopg.Cursor[dict[str, Any]]:
        cur = self._named
        if cur is None or cur.closed:
            cur = self._named = self.cursor()
        return cur.execute(query, params, prepare=True)


def sweep_period(idle_timeout: float) -> float:
    """How often the pool looks for sessions idle past ``idle_timeout``: a session goes back
    to the server at most this long after its timeout."""
    return min(5.0, max(0.1, idle_timeout / 4))


class SweepingPool(ConnectionPool[Session]):
    """A ConnectionPool that gives back every session idle longer than ``idle_timeout``.

    psycopg_pool closes at most one idle connection per ``max_idle`` period (and only those
    beyond min_size): a worker that had 36 sessions at its peak kept most of them for hours,
    so other clients of a server at ``max_connections`` were refused. Here ``max_idle`` is the
    sweep period and each sweep closes every session idle past the timeout.
    """

    def __init__(self, *args: Any, idle_timeout: float, **kwargs: Any) -> None:
        self.idle_timeout = idle_timeout
        super().__init__(*args, max_idle=sweep_period(idle_timeout), **kwargs)

    def _shrink_pool(self) -> None:
        now = time.monotonic()
        stale = []
        with self._lock:
            idle = self._pool
            for conn in list(idle):
                if self._nconns <= self._min_size:
                    break
                if now - getattr(conn, "idle_since", now) >= self.idle_timeout:
                    idle.remove(conn)
                    self._nconns -= 1
                    stale.append(conn)
            self._nconns_min = len(idle)
        for conn in stale:
            self._close_connection(conn)
