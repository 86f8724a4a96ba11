"""The Database: a schema on a server, its named statements, and a pool built lazily in the
process that uses it and guarded by pid.

Nothing crosses a fork: a pool created before a fork is never touched (nor closed, which would
end the parent's sessions) in the child; the child builds its own. The sessions and the pool
class are in :mod:`.sessions`, the errors of connecting in :mod:`.errors`, the test clock in
:mod:`.clock`, the wait for a server that went away in :mod:`.outage`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import DatabaseUnavailable
from .clock import SessionClock
from .errors import (
    connect_error,
    describe_target,
    is_connection_error,
    no_session_error,
    translate,
)
from .outage import Reachability
from .sessions import (
    PGFLOW_SESSION_OPTIONS,
    ConnectAttempts,
    MostRecentFirst,
    Session,
    SweepingPool,
    closed_by_server,
    quiet_pool_log,
    session_options,
    sweep_period,
)
from .sql import Queries

# The names other modules import from here (the sessions' live in .sessions).
__all__ = ["PGFLOW_SESSION_OPTIONS", "ConnectAttempts", "Database", "sweep_period"]

T = TypeVar("T")

# Pools inherited across a fork are parked here so that their connections are never finalized
# in the child (finalizing would send a Terminate on the parent's sockets).
_INHERITED: list[Any] = []


class Database:
    """A schema on a server: named queries plus a pid-guarded pool of autocommit connections."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        max_size: int = 10,
        application_name: str = "pgflow",
        connect_timeout: float = 10.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.target = describe_target(url)
        self.queries = Queries(schema)
        self.schema = schema
        self.max_size = max(1, max_size)
        self.application_name = application_name[:63]
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.attempts = ConnectAttempts()
        self._session_class: type[Session] = type(
            "Session", (Session,), {"attempts": self.attempts}
        )
        self._pool: ConnectionPool[Session] | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._clock = SessionClock()
        self._reach = self._new_reachability()
        quiet_pool_log()
        # Called on each pause of retrying() (a worker process tells its supervisor that it
        # is waiting for the database, not stuck).
        self.waiting: Callable[[], None] | None = None

    # -- connections ---------------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "row_factory": dict_row,
            "application_name": self.application_name,
            "connect_timeout": max(1, int(self.connect_timeout)),
            "options": self._options(),
        }

    def _options(self) -> str:
        """Session settings: the URL's (or PGOPTIONS') ``options``, then pgflow's own."""
        return session_options(self.url)

    def _new_reachability(self) -> Reachability:
        return Reachability(self._probe, self._replace_pool, self.target)

    def _probe(self) -> None:
        """Connect once and hang up (raises when the server does not answer)."""
        kwargs = {
            **self._connect_kwargs(),
            "connect_timeout": min(5, self._connect_kwargs()["connect_timeout"]),
        }
        # Through the session class: a refusal is recorded as the reason to report.
        self._session_class.connect(self.url, **kwargs).close()

    def _replace_pool(self) -> None:
        """After an outage: a new pool, so that work does not wait out the old one's
        reconnection backoff (it doubles, up to a minute or more after a long outage). The
        old one is closed in the background; sessions borrowed from it are closed when
        returned."""
        with self._lock:
            old, self._pool = self._pool, None
        if old is not None and self._pid == os.getpid():
            threading.Thread(
                target=old.close, kwargs={"timeout": 5.0}, daemon=True, name="pgflow-pool-close"
            ).start()

    def lost(self, reason: str) -> None:
        """A session outside the pool (LISTEN) lost the server: probe before the next use."""
        self._reach.failed(reason)

    def since_outage(self) -> float:
        """Seconds since the last outage ended (infinite when there was none)."""
        if self._reach.away:
            return 0.0
        back = self._reach.back_at
        return float("inf") if back is None else time.monotonic() - back

    @property
    def suspect(self) -> bool:
        """True after a statement lost its connection, until the server is seen to answer."""
        return self._reach.suspect

    @property
    def away(self) -> bool:
        """True while this process knows the server to be unreachable (an outage)."""
        return self._reach.away

    def wait_available(self, timeout: float | None = None) -> bool:
        """Block while the server is known or suspected to be away; True once it answers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._reach.wait(deadline)

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        """A new connection outside the pool (LISTEN, migrations, one-off commands)."""
        try:
            conn = self._session_class.connect(self.url, **self._connect_kwargs())
            if self._clock.generation:
                try:
                    self._apply_clock(conn)
                except BaseException:
                    conn.close()
                    raise
            return conn
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None

    def _connect_error(self, exc: psycopg.Error) -> Exception:
        return connect_error(exc, self.target, connected_once=self.attempts.connected_once)

    # -- the database clock --------------------------------------------------------------------

    @property
    def clock_offset(self) -> float:
        """Seconds added to database time ({schema}.clock()) on this Database's sessions.

        0 in production. Setting it (pgflow.testing.Clock does) reaches every pooled session at
        its next checkout, and every new one.
        """
        return self._clock.offset

    @clock_offset.setter
    def clock_offset(self, seconds: float) -> None:
        self._clock.set(seconds)

    def advance_clock(self, seconds: float) -> None:
        """Move this Database's clock forward (atomic against concurrent advances)."""
        self._clock.advance(seconds)

    def _apply_clock(self, conn: psycopg.Connection[Any]) -> None:
        """Bring one session's offset up to date (one round trip, only after a change)."""
        self._clock.apply(conn, self.queries["set_clock_offset"])

    @property
    def pool(self) -> ConnectionPool[Session]:
        if self._pid != os.getpid():
            # Inherited across fork: park the parent's pool, build ours.
            if self._pool is not None:
                _INHERITED.append(self._pool)
            self._pool = None
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._clock.after_fork()
            self._reach = self._new_reachability()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    # min_size 0: an idle process gives every session back (the sweep of
                    # SweepingPool); a busy one keeps those it uses, most recently returned
                    # first.
                    pool = SweepingPool(
                        self.url,
                        min_size=0,
                        max_size=self.max_size,
                        idle_timeout=self.idle_timeout,
                        kwargs=self._connect_kwargs(),
                        connection_class=self._session_class,
                        open=False,
                        timeout=self.connect_timeout,
                        reconnect_timeout=3600.0,
                        name=f"pgflow-{self.schema}",
                    )
                    # Swapped before open() fills it; left FIFO if psycopg_pool changes shape.
                    if isinstance(getattr(pool, "_pool", None), deque) and not pool._pool:
                        pool._pool = MostRecentFirst()
                    pool.open()
                    self._pool = pool
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[Session]:
        """Borrow a pooled autocommit connection.

        getconn/putconn rather than the pool's own context manager, which also enters the
        connection's (a commit on the way out: a call into psycopg's wait loop for nothing on
        an autocommit session). A session left in a transaction is rolled back by putconn.
        """
        pool = self.pool
        conn = self._checkout(pool)
        try:
            yield conn
        except psycopg.Error as exc:
            if is_connection_error(exc):
                self._reach.failed(str(exc))
            raise translate(exc, self.target) from None
        finally:
            pool.putconn(conn)  # MostRecentFirst.append stamps idle_since

    def _checkout(self, pool: ConnectionPool[Session]) -> Session:
        try:
            for tries_left in range(self.max_size, -1, -1):
                conn = pool.getconn()
                if tries_left and closed_by_server(conn):
                    conn.close()  # the pool discards it and opens a new one
                    pool.putconn(conn)
                    continue
                if self._clock.generation:  # an int test per checkout; 0 in production
                    try:
                        self._apply_clock(conn)
                    except BaseException:
                        pool.putconn(conn)
                        raise
                return conn
        except PoolTimeout:
            self._reach.failed("no pooled connection")
            raise self._no_session() from None
        except psycopg.Error as exc:
            if is_connection_error(exc):
                self._reach.failed(str(exc))
            raise translate(exc, self.target) from None
        raise AssertionError("unreachable: the last try does not check the connection")

    def _no_session(self) -> Exception:
        return no_session_error(
            self.target,
            self.attempts.last_error,
            connected_once=self.attempts.connected_once,
            connect_timeout=self.connect_timeout,
            max_size=self.max_size,
        )

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None

    # -- statements ----------------------------------------------------------------------------

    def execute(
        self, conn: psycopg.Connection[Any], name: str, params: dict[str, Any] | None = None
    ) -> psycopg.Cursor[Any]:
        """Run the named statement on ``conn`` (errors translated by the caller's boundary).

        The result must be read before the next statement on ``conn``: pgflow's sessions run
        every named statement on one cursor."""
        if isinstance(conn, Session):
            return conn.run_named(self.queries[name], params)
        return conn.execute(self.queries[name], params, prepare=True)

    def fetchone(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        if name in self.queries.scanning:
            rows = self.fetchall(name, params)
            return rows[0] if rows else None
        with self.connection() as conn:
            return self.execute(conn, name, params).fetchone()

    def fetchall(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.connection() as conn:
            if name in self.queries.scanning:
                # A report over much of a table: sequential scans allowed, for this
                # transaction only (always so for this statement, so its cached plan agrees).
                with conn.transaction():
                    conn.execute(self.queries["allow_scans"], prepare=True)
                    return self.execute(conn, name, params).fetchall()
            return self.execute(conn, name, params).fetchall()

    def run(self, name: str, params: dict[str, Any] | None = None) -> int:
        """Run a statement; return its row count."""
        with self.connection() as conn:
            return self.execute(conn, name, params).rowcount

    def retrying(self, fn: Callable[[], T], *, patience: float | None = None) -> T:
        """Call ``fn``, and again each time it loses the database, once the server answers.

        Waits as long as the outage lasts unless ``patience`` (seconds) is given; then
        DatabaseUnavailable once it is spent. Only for operations that are safe to repeat
        (idempotent writes and reads).
        """
        deadline = None if patience is None else time.monotonic() + patience
        while True:
            try:
                return fn()
            except DatabaseUnavailable as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                self._reach.failed(str(exc))
            except psycopg.Error as exc:
                if not is_connection_error(exc):
                    raise translate(exc, self.target) from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise translate(exc, self.target) from None
                self._reach.failed(str(exc))
            self._wait_for_server(deadline)

    def _wait_for_server(self, deadline: float | None) -> None:
        """Wait for the server in short slices, telling whoever listens that this is a wait
        for the database (a worker's liveness), not a hang."""
        while True:
            now = time.monotonic()
            end = now + 1.0 if deadline is None else min(deadline, now + 1.0)
            if self._reach.wait(end):
                return
            if self.waiting is not None:
                self.waiting()
            if deadline is not None and time.monotonic() >= deadline:
                raise DatabaseUnavailable(
                    f"cannot reach the database at {self.target} ({self._reach.reason}); "
                    "check that it is running and that the URL is right"
                )
