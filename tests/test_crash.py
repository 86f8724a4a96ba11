"""Real processes, really killed: recovery from SIGKILL, and fencing of a frozen owner.

Each test runs ``tests/crash_app.py`` in child processes on the test's database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.recovery import reap_dead_executors
from tests.apps import MakeApp
from tests.processes import ROOT, start_python

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

# Long enough that only pid-based detection can explain a prompt recovery.
HEARTBEAT_TIMEOUT = 120.0


class Harness:
    """Starts crash_app processes and waits on the files they write."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.dir = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str, gates: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "CRASH_APP_DATABASE_URL": self.url,
                "CRASH_APP_DIR": str(self.dir),
                "CRASH_APP_GATES": ",".join(gates),
                "PGFLOW_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "PGFLOW_HEARTBEAT_INTERVAL": "1.0",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            }
        )
        log = self.dir / f"proc{len(self.procs)}.log"
        proc = start_python("from tests.crash_app import main; main()", *args, env=env, log=log)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("*.log")))

    def wait_file(self, name: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> Path:
        path = self.dir / name
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if path.exists():
                return path
            if proc.poll() is not None:
                raise AssertionError(
                    f"process {proc.pid} exited ({proc.returncode}) before "
                    f"writing {name}:\n{self.logs()}"
                )
            time.sleep(0.01)
        raise AssertionError(f"no {name} after {timeout}s:\n{self.logs()}")

    def wait_gate(self, gate: str, proc: subprocess.Popen[bytes]) -> None:
        self.wait_file(f"{gate}.{proc.pid}.ready", proc)

    def open_gate(self, gate: str, proc: subprocess.Popen[bytes]) -> None:
        (self.dir / f"{gate}.{proc.pid}.go").touch()

    def read_json(
        self, name: str, proc: subprocess.Popen[bytes], timeout: float = 30.0
    ) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.wait_file(f"{name}.{proc.pid}.json", proc, timeout).read_text()
        )
        return found

    def finish(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {proc.pid} did not exit:\n{self.logs()}") from None
        assert code == 0, self.logs()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def harness(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.ledger (id serial PRIMARY KEY, workflow_id text, "
            "step int, pid int, note text)"
        )
    h = Harness(database_url, tmp_path)
    yield h
    h.stop_all()


@pytest.fixture
def inspector(make_app: MakeApp) -> pgflow.App:
    return make_app("inspector", app_version="crash-v1")


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def workflow_row(url: str, workflow_id: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute(
            "SELECT * FROM pgflow.workflow_status WHERE workflow_id = %s", (workflow_id,)
        ).fetchone()
    assert row is not None
    return row


def checkpoints(url: str, workflow_id: str) -> list[tuple[int, str, str]]:
    return [
        (r[0], r[1], r[2])
        for r in query(
            url,
            "SELECT step_id, name, executor_id FROM pgflow.operation_outputs "
            "WHERE workflow_id = %s ORDER BY step_id",
            (workflow_id,),
        )
    ]


def test_sigkill_after_a_transaction_resumes_from_the_next_step(
    harness: Harness, database_url: str
) -> None:
    a = harness.spawn("run", "order-7", "five_steps", gates=("after_tx",))
    harness.wait_gate("after_tx", a)
    before = workflow_row(database_url, "order-7")
    assert before["status"] == "PENDING" and before["executor_id"] is not None
    assert [c[1] for c in checkpoints(database_url, "order-7")] == [
        "crash.one",
        "crash.two",
        "crash.three",
    ]

    os.kill(a.pid, signal.SIGKILL)
    assert a.wait(timeout=10) == -signal.SIGKILL  # reaped: its pid is really gone
    killed_at = time.monotonic()

    b = harness.spawn("recover", "order-7")
    out = harness.read_json("result", b, timeout=HEARTBEAT_TIMEOUT / 4)
    recovered_in = time.monotonic() - killed_at
    harness.finish(b)

    # 8, 16, 19, 190, 189: the recorded values of steps 1-3 fed steps 4-5.
    assert out["result"] == {"values": [8, 16, 19, 190, 189], "finished_by": b.pid}
    assert recovered_in < HEARTBEAT_TIMEOUT / 4, recovered_in
    ledger = query(
        database_url,
        "SELECT step, pid, note FROM public.ledger WHERE workflow_id = 'order-7' ORDER BY step, id",
    )
    assert ledger == [
        (1, a.pid, ""),
        (2, a.pid, ""),
        (3, a.pid, "tx"),
        (4, b.pid, ""),
        (5, b.pid, ""),
    ]
    row = workflow_row(database_url, "order-7")
    assert row["status"] == "SUCCESS" and row["recovery_attempts"] == 1
    assert row["executor_id"] != before["executor_id"]
    steps = checkpoints(database_url, "order-7")
    assert [s[0] for s in steps] == [1, 2, 3, 4, 5]
    assert {s[2] for s in steps[:3]} == {before["executor_id"]}
    assert {s[2] for s in steps[3:]} == {row["executor_id"]}
    # The dead executor's heartbeat row went with its work.
    assert query(
        database_url,
        "SELECT count(*) FROM pgflow.executors WHERE executor_id = %s",
        (before["executor_id"],),
    ) == [(0,)]


def _adopt_from_frozen_owner(
    harness: Harness, inspector: pgflow.App, database_url: str, workflow_id: str, gate: str
) -> tuple[Any, Any, str, str]:
    """A runs the workflow and freezes at ``gate``; A is declared dead; B adopts it and
    freezes at the same gate. Returns (A, B, A's executor id, B's executor id)."""
    a = harness.spawn("run", workflow_id, "fence", gates=(gate,))
    harness.wait_gate(gate, a)
    a_exec = workflow_row(database_url, workflow_id)["executor_id"]
    assert a_exec is not None
    # A is alive but frozen: another executor declares it dead and releases its work.
    assert reap_dead_executors(inspector, "test-reaper", [a_exec]) == [a_exec]
    released = workflow_row(database_url, workflow_id)
    assert released["status"] == "PENDING" and released["executor_id"] is None

    b = harness.spawn("recover", workflow_id, gates=(gate,))
    harness.wait_gate(gate, b)
    b_exec = workflow_row(database_url, workflow_id)["executor_id"]
    assert b_exec not in (None, a_exec)
    return a, b, a_exec, b_exec


def test_frozen_owner_writes_no_checkpoint_after_adoption(
    harness: Harness, inspector: pgflow.App, database_url: str
) -> None:
    a, b, a_exec, b_exec = _adopt_from_frozen_owner(
        harness, inspector, database_url, "fence-step", "in_step_two"
    )
    assert checkpoints(database_url, "fence-step") == [(1, "fence.one", a_exec)]

    harness.open_gate("in_step_two", a)  # A wakes up and finishes step 2
    harness.read_json("run_done", a)  # A's workflow thread gave up
    assert checkpoints(database_url, "fence-step") == [(1, "fence.one", a_exec)]
    row = workflow_row(database_url, "fence-step")
    assert row["status"] == "PENDING" and row["executor_id"] == b_exec
    assert row["output"] is None
    assert "workflow_fenced_out" in harness.logs()

    harness.open_gate("in_step_two", b)
    out_b = harness.read_json("result", b)
    out_a = harness.read_json("result", a)
    harness.finish(b)
    harness.finish(a)
    expected = {"one": a.pid, "two": b.pid, "finished_by": b.pid}
    assert out_b["result"] == expected
    assert out_a["result"] == expected  # A's waiter got B's outcome
    assert checkpoints(database_url, "fence-step") == [
        (1, "fence.one", a_exec),
        (2, "fence.two", b_exec),
    ]
    assert workflow_row(database_url, "fence-step")["status"] == "SUCCESS"


def test_frozen_owner_final_write_is_refused(
    harness: Harness, inspector: pgflow.App, database_url: str
) -> None:
    a, b, a_exec, b_exec = _adopt_from_frozen_owner(
        harness, inspector, database_url, "fence-final", "before_finish"
    )
    # B replayed steps 1-2 from A's checkpoints and froze before its own final write.
    assert checkpoints(database_url, "fence-final") == [
        (1, "fence.one", a_exec),
        (2, "fence.two", a_exec),
    ]

    harness.open_gate("before_finish", a)  # A tries to write SUCCESS with its own output
    harness.read_json("run_done", a)
    row = workflow_row(database_url, "fence-final")
    assert row["status"] == "PENDING" and row["executor_id"] == b_exec
    assert row["output"] is None and row["completed_at"] is None

    harness.open_gate("before_finish", b)
    out_b = harness.read_json("result", b)
    out_a = harness.read_json("result", a)
    harness.finish(b)
    harness.finish(a)
    expected = {"one": a.pid, "two": a.pid, "finished_by": b.pid}
    assert out_b["result"] == expected and out_a["result"] == expected
    row = workflow_row(database_url, "fence-final")
    assert row["status"] == "SUCCESS" and row["executor_id"] == b_exec
    assert json.loads(row["output"]) == expected
    assert len(checkpoints(database_url, "fence-final")) == 2
