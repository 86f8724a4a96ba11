"""This process as an owner of workflows: its executor id, its heartbeat row and thread, and
how it learns it was declared dead. Sits beside the Runtime (which creates one, once); the
reaping of dead executors and the adoption of their work are in :mod:`pgflow.recovery`.

Liveness is judged on the database clock only; executor ids are fresh per process
incarnation, so a restarted process is a new owner.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from . import metrics
from .db.notify import queue_channel
from .errors import PgflowError
from .records import Claimed

if TYPE_CHECKING:
    from .completions import Completions
    from .db.pool import Database
    from .registry import Registry
    from .settings import Settings

log = structlog.get_logger("pgflow")

HOSTNAME = socket.gethostname()
# Seconds a deregistering executor (a shutdown, a drain) waits for an absent database.
DEREGISTER_PATIENCE = 2.0
# Seconds between this host's clock and the database's above which a process says so.
CLOCK_SKEW_WARNING = 5.0


def new_executor_id() -> str:
    """Fresh per process incarnation: never reused, so a restarted process is a new owner."""
    return uuid.uuid4().hex


class LiveExecutors:
    """The executors this process has registered and not deregistered: alive for as long as
    the process is, whatever their heartbeats look like from here.

    Process-wide by nature (every App of the process shares the pid the others judge by), so
    it is the one module-level object of this module; a forked child starts with none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._ids: set[str] = set()

    def _mine(self) -> set[str]:
        if self._pid != os.getpid():
            self._pid, self._ids = os.getpid(), set()
        return self._ids

    def add(self, executor_id: str) -> None:
        with self._lock:
            self._mine().add(executor_id)

    def discard(self, executor_id: str) -> None:
        with self._lock:
            self._mine().discard(executor_id)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._mine())


LIVE_HERE = LiveExecutors()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExecutorHost(Protocol):
    """What an executor needs of the process's services (a Runtime; an App delegates)."""

    @property
    def db(self) -> Database: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def app_version(self) -> str: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def completions(self) -> Completions: ...


def deregister_executor(host: ExecutorHost, executor_id: str) -> list[dict[str, Any]]:
    """Delete an executor's row and hand back its PENDING work (uncharged: a drain), in one
    transaction: nothing is ever left PENDING under an owner nobody can find any more. Runs
    that crashed have handed their own work back already, charged (execution.run_claimed)."""

    def attempt() -> list[dict[str, Any]]:
        with host.db.connection() as conn, conn.transaction():
            host.db.execute(conn, "deregister_executor", {"executor_id": executor_id})
            return host.db.execute(
                conn,
                "release_executor_work",
                {
                    "executor_ids": [executor_id],
                    "charge": False,
                    "channel": queue_channel(host.db.schema),
                    "workflow_ids": None,
                },
            ).fetchall()

    # Briefly: should the database stay away, the row stays, its heartbeat stops, and a live
    # executor reaps it (releasing the same work) once it expires.
    released = host.db.retrying(attempt, patience=DEREGISTER_PATIENCE)
    for r in released:
        log.info(
            "workflow_released", workflow_id=r["workflow_id"], status=r["status"], charged=False
        )
    if released:
        host.completions.notify()
    return released


class Executor:
    """This process as an owner of workflows: its id, its heartbeat row and thread."""

    def __init__(
        self,
        host: ExecutorHost,
        *,
        kind: str = "app",
        queues: tuple[str, ...] = (),
        executor_id: str | None = None,
        on_declared_dead: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.kind = kind
        self.queues = queues
        self.executor_id = executor_id or new_executor_id()
        self.on_declared_dead = on_declared_dead
        self._pid = os.getpid()
        self._registered = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Database time of the first heartbeat of the current unbroken run of them.
        self.healthy_since: datetime | None = None

    def ensure_registered(self) -> None:
        """Insert the heartbeat row and start the heartbeat thread (once per process)."""
        if self._pid != os.getpid():
            # Forked: a new incarnation is a new executor.
            self.__init__(  # type: ignore[misc]
                self.host,
                kind=self.kind,
                queues=self.queues,
                on_declared_dead=self.on_declared_dead,
            )
        if self._registered:
            return
        with self._lock:
            if self._registered:
                return
            # Alive here before its row exists: no reaper of this process ever sees the row
            # without knowing it is ours.
            LIVE_HERE.add(self.executor_id)
            row = self.host.db.retrying(
                lambda: self.host.db.fetchone(
                    "register_executor",
                    {
                        "executor_id": self.executor_id,
                        "hostname": HOSTNAME,
                        "pid": os.getpid(),
                        "app_version": self.host.app_version,
                        "kind": self.kind,
                        "queues": list(self.queues),
                        "names": sorted(self.host.registry.workflows),
                    },
                )
            )
            if row is not None:
                self.healthy_since = row["heartbeat_at"]
                self._check_clock(row["heartbeat_at"])
            self._registered = True
            self._thread = threading.Thread(target=self._beat, name="pgflow-heartbeat", daemon=True)
            self._thread.start()
            log.debug("executor_registered", executor_id=self.executor_id)

    def _check_clock(self, db_time: datetime) -> None:
        """Warn when this machine's clock is off: pgflow never relies on it (liveness,
        delays, limits and sleeps follow the database's), but people reading logs do."""
        skew = time.time() - (db_time.timestamp() - self.host.db.clock_offset)
        if abs(skew) > CLOCK_SKEW_WARNING:
            log.warning(
                "clock_skew",
                executor_id=self.executor_id,
                local_minus_database_s=round(skew, 1),
                action="pgflow uses the database's clock; fix this host's (NTP)",
            )

    def _beat(self) -> None:
        interval = self.host.settings.heartbeat_interval
        while not self._stop.wait(interval):
            try:
                # A dead pooled connection is not a dead executor: retry within the interval.
                row = self.host.db.retrying(
                    lambda: self.host.db.fetchone("heartbeat", {"executor_id": self.executor_id}),
                    patience=interval,
                )
            except PgflowError as exc:
                self.healthy_since = None
                if not self.host.db.suspect:  # an outage is logged once, by the Database
                    log.warning("heartbeat_failed", error=str(exc))
                continue
            if row is None:
                self._declared_dead()
                return
            if self.healthy_since is None:
                self.healthy_since = row["heartbeat_at"]

    def _declared_dead(self) -> None:
        log.error(
            "executor_declared_dead",
            executor_id=self.executor_id,
            action="abandoning in-flight work; it was adopted elsewhere",
        )
        if self.on_declared_dead is not None:
            self.on_declared_dead()
            return
        # An application process lives on as a new executor; its old runs are fenced out.
        with self._lock:
            LIVE_HERE.discard(self.executor_id)
            self.executor_id = new_executor_id()
            self._registered = False
        self.ensure_registered()

    def stop(self, *, deregister: bool = True) -> None:
        self._stop.set()
        beat = self._thread
        if beat is not None and beat is not threading.current_thread():
            # A beat still running after stop would reach for host.db once the App has let go
            # of it, and build a pool for the old settings (seen in tests reusing one App).
            beat.join(timeout=min(5.0, self.host.settings.heartbeat_interval + 1.0))
        if deregister and self._registered and self._pid == os.getpid():
            with contextlib.suppress(PgflowError):
                deregister_executor(self.host, self.executor_id)
            LIVE_HERE.discard(self.executor_id)
        self._registered = False

    # -- recovery ------------------------------------------------------------------------------

    def dead_on_this_host(self) -> list[str]:
        """Executors of this host whose process is gone. One of our own pid is an earlier
        incarnation (a restarted container reuses pids), unless this process registered it:
        an App's executor and an in-process worker's (pgflow.testing) live side by side, and
        a process never takes itself for dead."""
        rows = self.host.db.fetchall(
            "executors_on_host", {"hostname": HOSTNAME, "executor_id": self.executor_id}
        )
        alive_here = LIVE_HERE.ids()
        return [
            r["executor_id"]
            for r in rows
            if not pid_alive(r["pid"])
            or (r["pid"] == os.getpid() and r["executor_id"] not in alive_here)
        ]

    def adopt(self, limit: int) -> list[Claimed]:
        """Take over up to ``limit`` ownerless PENDING workflows of this version."""
        if limit <= 0:
            return []
        me = self.executor_id  # the owner the adopted runs keep
        rows = self.host.db.retrying(
            lambda: self.host.db.fetchall(
                "adopt_orphans",
                {
                    "executor_id": me,
                    "app_version": self.host.app_version,
                    "names": sorted(self.host.registry.workflows),
                    "limit": limit,
                },
            )
        )
        for r in rows:
            metrics.adopted(r["queue_name"], r["name"])
        return [Claimed.from_row(r, me) for r in rows]
