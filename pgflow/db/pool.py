"""The connection pool, built lazily in the process that uses it and guarded by pid.

Nothing crosses a fork: a pool created before a fork is never touched (nor closed, which would
end the parent's sessions) in the child; the child builds its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConnectionRejected, DatabaseUnavailable
from .errors import (
    connection_advice,
    connection_reason,
    describe_target,
    is_connection_error,
    is_rejection,
    translate,
)
from .outage import Reachability
from .sql import Queries

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")

# Settings of pgflow's own sessions (see Database._options). Transaction steps and reports
# put the server's default back for one transaction (query allow_scans).
PGFLOW_SESSION_OPTIONS = "-c enable_seqscan=off -c jit=off"

# Pools inherited across a fork are parked here so that their connections are never finalized
# in the child (finalizing would send a Terminate on the parent's sockets).
_INHERITED: list[Any] = []


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


def _quiet_pool_log() -> None:
    logger = logging.getLogger("psycopg.pool")
    if not any(isinstance(f, _QuietPoolLog) for f in logger.filters):
        logger.addFilter(_QuietPoolLog())


class _MostRecentFirst(deque):  # type: ignore[type-arg]
    """The pool's idle connections, the one returned last handed out first (LIFO).

    psycopg_pool hands out the longest-idle connection (FIFO), so one thread running steps
    one after another alternates between every pooled session, each with cold caches on
    both sides of the socket. Measured: a step checkpoint cost 720 µs with FIFO and 590 µs
    with LIFO, against a 410-450 µs INSERT round trip (benchmarks, phase 5). The ones left at
    the far end idle long enough for _Pool's sweep to close them.
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


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """An idle pooled connection has nothing to read: readable means the server said goodbye
    (it restarted, pg_terminate_backend, an idle timeout). One poll, no round trip; such a
    connection is skipped at checkout instead of failing the statement run on it."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class _Connection(psycopg.Connection[dict[str, Any]]):
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


class _Pool(ConnectionPool[_Connection]):
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
        self._session_class: type[_Connection] = type(
            "_Connection", (_Connection,), {"attempts": self.attempts}
        )
        self._pool: ConnectionPool[_Connection] | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # The database clock's offset (pgflow.testing.Clock moves it). Generation 0 means it
        # was never set: checkouts then cost nothing extra, and sessions keep the default.
        self._clock_offset = 0.0
        self._clock_generation = 0
        self._clock_applied: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._clock_lock = threading.Lock()
        self._reach = self._new_reachability()
        _quiet_pool_log()
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
            given = conninfo_to_dict(self.url).get("options")
        except psycopg.Error:
            given = None
        if given is None:
            given = os.environ.get("PGOPTIONS")
        return " ".join(filter(None, [str(given) if given else "", PGFLOW_SESSION_OPTIONS]))

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
            if self._clock_generation:
                try:
                    self._apply_clock(conn)
                except BaseException:
                    conn.close()
                    raise
            return conn
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None

    def _connect_error(self, exc: psycopg.Error) -> Exception:
        """The error for a failed connection: ConnectionRejected when the server refused
        this Database's very first one for a reason waiting will not fix (a wrong password,
        an unknown database or role), so a misconfigured process stops at once; afterwards
        the same refusal is an outage like any other (a password rotated under a running
        worker pauses its work rather than failing it)."""
        if is_rejection(exc) and not self.attempts.connected_once:
            return ConnectionRejected(
                f"the database at {self.target} refused the connection: "
                f"{connection_reason(exc)}; fix the URL (user, password, database name) or "
                "the server's pg_hba.conf"
            )
        if is_connection_error(exc):
            return DatabaseUnavailable(
                f"cannot reach the database at {self.target}: {connection_reason(exc)}; "
                f"{connection_advice(exc)}"
            )
        return translate(exc, self.target)

    # -- the database clock --------------------------------------------------------------------

    @property
    def clock_offset(self) -> float:
        """Seconds added to database time ({schema}.clock()) on this Database's sessions.

        0 in production. Setting it (pgflow.testing.Clock does) reaches every pooled session at
        its next checkout, and every new one.
        """
        return self._clock_offset

    @clock_offset.setter
    def clock_offset(self, seconds: float) -> None:
        with self._clock_lock:
            self._clock_offset = float(seconds)
            self._clock_generation += 1

    def advance_clock(self, seconds: float) -> None:
        """Move this Database's clock forward (atomic against concurrent advances)."""
        with self._clock_lock:
            self._clock_offset += float(seconds)
            self._clock_generation += 1

    def _apply_clock(self, conn: psycopg.Connection[Any]) -> None:
        """Bring one session's offset up to date (one round trip, only after a change)."""
        with self._clock_lock:
            generation, offset = self._clock_generation, self._clock_offset
        if self._clock_applied.get(conn) == generation:
            return
        conn.execute(self.queries["set_clock_offset"], {"offset": repr(offset)})
        with self._clock_lock:
            self._clock_applied[conn] = generation

    @property
    def pool(self) -> ConnectionPool[_Connection]:
        if self._pid != os.getpid():
            # Inherited across fork: park the parent's pool, build ours.
            if self._pool is not None:
                _INHERITED.append(self._pool)
            self._pool = None
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._clock_lock = threading.Lock()
            self._clock_applied = weakref.WeakKeyDictionary()
            self._reach = self._new_reachability()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    # min_size 0: an idle process gives every session back (the sweep of
                    # _Pool); a busy one keeps those it uses, most recently returned first.
                    pool = _Pool(
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
                        pool._pool = _MostRecentFirst()
                    pool.open()
                    self._pool = pool
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[_Connection]:
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
            pool.putconn(conn)  # _MostRecentFirst.append stamps idle_since

    def _checkout(self, pool: ConnectionPool[_Connection]) -> _Connection:
        try:
            for tries_left in range(self.max_size, -1, -1):
                conn = pool.getconn()
                if tries_left and _closed_by_server(conn):
                    conn.close()  # the pool discards it and opens a new one
                    pool.putconn(conn)
                    continue
                if self._clock_generation:  # an int test per checkout; 0 in production
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
        """The error for a checkout that waited ``connect_timeout`` in vain: the server's own
        reason for refusing the pool's last attempt, else a pool whose sessions all stayed
        busy (every user holds one at a time, so this is slow work, never a deadlock)."""
        failure = self.attempts.last_error
        if failure is not None:
            error = self._connect_error(failure)
            if isinstance(error, DatabaseUnavailable):
                return DatabaseUnavailable(
                    f"no connection to the database at {self.target} within "
                    f"{self.connect_timeout:.0f}s: {connection_reason(failure)}; "
                    f"{connection_advice(failure)}"
                )
            return error
        return DatabaseUnavailable(
            f"all {self.max_size} pooled connections of this process to {self.target} stayed "
            f"busy for {self.connect_timeout:.0f}s; raise the pool size (PGFLOW_POOL_SIZE, "
            "--pool-size) or run fewer threads"
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
        if isinstance(conn, _Connection):
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
            # Wait for the server in short slices, telling whoever listens that this is a
            # wait for the database (a worker's liveness), not a hang.
            while True:
                now = time.monotonic()
                end = now + 1.0 if deadline is None else min(deadline, now + 1.0)
                if self._reach.wait(end):
                    break
                if self.waiting is not None:
                    self.waiting()
                if deadline is not None and time.monotonic() >= deadline:
                    raise DatabaseUnavailable(
                        f"cannot reach the database at {self.target} ({self._reach.reason}); "
                        "check that it is running and that the URL is right"
                    )
