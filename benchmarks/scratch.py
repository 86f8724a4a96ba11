"""The scratch database the suite runs in, and the few admin statements the harness needs.

The suite never touches the database named in the URL it is given: it creates its own
(``pgflow_bench``), points pgflow at it and drops it at the end. The SQL here is the harness's
own (resetting tables, reading counters); everything pgflow does goes through pgflow.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SCRATCH_NAME = "pgflow_bench"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PGFLOW_SCHEMA = "pgflow"

_SERVER_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
    "max_connections",
    "work_mem",
)


def with_database(url: str, dbname: str) -> str:
    """The same server URL with another database name (a ``postgresql://`` URL)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"--database-url must be a postgresql:// URL, not {url!r}")
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def redact(url: str) -> str:
    """The URL without its password, for reports."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@dataclass
class CpuSample:
    """CPU time of this process's reaped children, and of the whole machine (from /proc)."""

    wall: float
    children: float
    busy: float
    total: float

    @classmethod
    def now(cls) -> CpuSample:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = total = 0.0
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
            tick = os.sysconf("SC_CLK_TCK")
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
            total = sum(fields[:8]) / tick
            busy = total - idle / tick
        except (OSError, ValueError, IndexError):
            pass
        return cls(time.monotonic(), usage.ru_utime + usage.ru_stime, busy, total)

    def since(self, start: CpuSample) -> dict[str, float]:
        """Seconds of child CPU, and the machine's busy share (0..1 over all cores)."""
        total = self.total - start.total
        return {
            "children_cpu_s": self.children - start.children,
            "machine_busy": (self.busy - start.busy) / total if total > 0 else float("nan"),
        }


def _proc_cpu(pid: int, children_too: bool = False) -> float:
    """CPU seconds of a process from /proc (and of its reaped children, if asked)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = float(fields[11]) + float(fields[12])  # utime, stime
    if children_too:
        ticks += float(fields[13]) + float(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Scratch:
    """A scratch database on the server of ``server_url``: created fresh, dropped at the end."""

    def __init__(self, server_url: str, name: str = SCRATCH_NAME) -> None:
        self.server_url = server_url
        self.name = name
        self.url = with_database(server_url, name)
        self._admin: psycopg.Connection[Any] | None = None

    # -- lifetime ------------------------------------------------------------------------------

    def create(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            ident = sql.Identifier(self.name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))

    def drop(self) -> None:
        self.close()
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            ident = sql.Identifier(self.name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    @property
    def admin(self) -> psycopg.Connection[Any]:
        """The harness's own autocommit connection to the scratch database."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(
                self.url, autocommit=True, application_name="pgflow-bench-admin"
            )
        return self._admin

    # -- statements ----------------------------------------------------------------------------

    def one(self, query: str, params: Any = None) -> Any:
        row = self.admin.execute(query, params).fetchone()
        return None if row is None else row[0]

    def server_cpu(self) -> float:
        """CPU seconds used by the whole PostgreSQL server so far (postmaster, its live
        processes, and those that exited): only when it runs on this machine, else NaN.
        Other databases' load counts too (see ``wait_quiet``)."""
        try:
            backend = int(self.one("SELECT pg_backend_pid()"))
            with open(f"/proc/{backend}/stat", encoding="ascii") as f:
                postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
            total = _proc_cpu(postmaster, children_too=True)
            children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
            for pid in children.split():
                with contextlib.suppress(OSError):
                    total += _proc_cpu(int(pid))
            return total
        except (OSError, ValueError, IndexError):
            return float("nan")

    def row(self, query: str, params: Any = None) -> tuple[Any, ...]:
        """The one row ``query`` returns (an error when there is none)."""
        found = self.admin.execute(query, params).fetchone()
        if found is None:
            raise RuntimeError(f"no row from: {query.strip()[:80]}")
        return found  # type: ignore[no-any-return]

    def db_now(self) -> datetime:
        """The server's clock (every duration the suite reports is on this clock)."""
        return self.one("SELECT clock_timestamp()")  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Empty pgflow's tables so every run starts alike. Migrations stay, and so do the
        executors: this process's own (it ran workflows) must not be declared dead."""
        tables = self.admin.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s "
            "AND tablename NOT IN ('migrations', 'executors')",
            (PGFLOW_SCHEMA,),
        ).fetchall()
        if tables:
            names = sql.SQL(", ").join(sql.Identifier(PGFLOW_SCHEMA, t) for (t,) in sorted(tables))
            self.admin.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))

    def reset_runs(self) -> None:
        """Empty only the workflow tables (executors and queues stay: a worker is running);
        CASCADE: the tables that refer to workflows (event history) go with them."""
        self.admin.execute(
            sql.SQL("TRUNCATE {}, {}, {}").format(
                sql.Identifier(PGFLOW_SCHEMA, "workflow_status"),
                sql.Identifier(PGFLOW_SCHEMA, "operation_outputs"),
                # References workflow_status (migration 0008): truncated with it.
                sql.Identifier(PGFLOW_SCHEMA, "workflow_event_history"),
            )
        )

    def settle(self) -> None:
        """Fresh planner statistics and a checkpoint, so no run pays for the previous one's
        dirty pages (autovacuum may be off on the server)."""
        self.admin.execute(
            sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(PGFLOW_SCHEMA, "workflow_status"))
        )
        self.checkpoint()

    def checkpoint(self) -> None:
        # Not a superuser: no checkpoint; runs are a little noisier, nothing else changes.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            self.admin.execute("CHECKPOINT")

    def commits(self, settle: float = 1.2) -> int:
        """Committed transactions of the scratch database so far. Backends publish their
        counts within a second of going idle (at once when they exit), hence the wait."""
        time.sleep(settle)
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        return int(
            self.one("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )

    quiet_wait: float = 15.0  # seconds to wait for a quiet machine before a timed run
    quiet_below: float = 0.25  # busy share of all cores that counts as quiet

    def wait_quiet(self) -> dict[str, Any]:
        """Wait (up to ``quiet_wait`` s) until the machine is mostly idle, then say how busy it
        was and how many backends of other databases were active: on a shared machine other
        people's load skews the figures, and the JSON should show it."""
        end = time.monotonic() + self.quiet_wait
        while True:
            start = CpuSample.now()
            time.sleep(1.0)
            busy = CpuSample.now().since(start)["machine_busy"]
            if busy < self.quiet_below or time.monotonic() >= end:
                break
        others = self.one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND backend_type = "
            "'client backend' AND datname IS DISTINCT FROM current_database()"
        )
        return {"busy_before": round(busy, 3), "other_active_backends": int(others)}

    def server_info(self) -> dict[str, str]:
        rows = self.admin.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            (list(_SERVER_SETTINGS),),
        ).fetchall()
        return dict(rows)
