"""Count pgflow's round trips by statement name, for the profiles (never for timed runs).

``python -m benchmarks.instrumented worker ...`` is ``pgflow worker ...`` with counting: every
worker process writes its counts to ``$BENCH_COUNTS_DIR/<pid>.json`` when it ends. In-process,
``counting()`` patches the same places and yields the live counter.

Counted: every named statement (``Database.execute``, which fetchone/fetchall/run go through),
every explicit transaction (its BEGIN and COMMIT or ROLLBACK are two more round trips) and
every new connection. pgflow's files are not changed: the patches live in this process only.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from pgflow.db.pool import Database


class Counter:
    """Thread-safe tallies: ``statements[name]``, ``transactions`` and ``connections``."""

    def __init__(self) -> None:
        self.statements: collections.Counter[str] = collections.Counter()
        self.transactions = 0
        self.connections = 0
        self._lock = threading.Lock()

    def add(self, what: str, name: str | None = None) -> None:
        with self._lock:
            if what == "statement":
                self.statements[name or "?"] += 1
            elif what == "transaction":
                self.transactions += 1
            else:
                self.connections += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "statements": dict(self.statements),
                "transactions": self.transactions,
                "connections": self.connections,
                "round_trips": sum(self.statements.values()) + 2 * self.transactions,
            }


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    """Patch the counting points for the duration of the block."""
    counter = Counter()
    execute = Database.execute
    transaction = psycopg.Connection.transaction
    connect = psycopg.Connection.connect

    @functools.wraps(execute)
    def counted_execute(self: Database, conn: Any, name: str, params: Any = None) -> Any:
        counter.add("statement", name)
        return execute(self, conn, name, params)

    @functools.wraps(transaction)
    def counted_transaction(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.add("transaction")
        return transaction(self, *args, **kwargs)

    def counted_connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        counter.add("connection")
        return connect.__func__(cls, *args, **kwargs)  # type: ignore[attr-defined]

    Database.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Connection.transaction = counted_transaction  # type: ignore[method-assign]
    psycopg.Connection.connect = classmethod(counted_connect)  # type: ignore[method-assign,assignment]
    try:
        yield counter
    finally:
        Database.execute = execute  # type: ignore[method-assign]
        psycopg.Connection.transaction = transaction  # type: ignore[method-assign]
        psycopg.Connection.connect = connect  # type: ignore[method-assign]


def _instrument_worker(out_dir: Path) -> None:
    """Make each worker process count from its start and write its counts when it ends."""
    from pgflow.worker.process import WorkerProcess

    run = WorkerProcess.run

    @functools.wraps(run)
    def counted_run(self: WorkerProcess) -> int:
        with counting() as counter:
            try:
                return run(self)
            finally:
                data = {"pid": os.getpid(), "done": self.done, **counter.as_dict()}
                path = out_dir / f"{os.getpid()}.json"
                path.write_text(json.dumps(data), encoding="utf-8")

    WorkerProcess.run = counted_run  # type: ignore[method-assign]


def main() -> None:
    from pgflow.cli import main as cli

    out = os.environ.get("BENCH_COUNTS_DIR")
    if not out:
        cli(prog_name="pgflow")
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    _instrument_worker(Path(out))
    # The supervisor counts too (its children count afresh and leave with os._exit).
    with counting() as counter:
        try:
            cli(prog_name="pgflow")
        finally:
            data = {"pid": os.getpid(), "supervisor": True, **counter.as_dict()}
            (Path(out) / f"supervisor-{os.getpid()}.json").write_text(json.dumps(data))


if __name__ == "__main__":
    sys.argv[0] = "pgflow"
    main()
