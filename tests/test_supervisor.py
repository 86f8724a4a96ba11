"""The supervisor's watch over its children, with real processes and real signals: a child that
stops turning its main loop is killed and replaced and its work finishes elsewhere; children
that keep failing to start halt the worker with a documented exit code; SIGHUP replaces the
children gracefully with the task module's new code."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pgflow
from pgflow.worker.supervisor import BOOT_FAILURES_BEFORE_HALT, EXIT_BOOT_FAILED
from tests import test_worker, worker_app
from tests.processes import StartWorker, parent_of, process_gone, wait_for
from tests.test_worker import FAST, assert_all_success, query, worker_pids

# test_worker's fixture: tests.worker_app's App on the test's database with its record tables.
app = test_worker.app


def test_a_frozen_child_is_killed_and_its_work_finishes_elsewhere(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    """SIGSTOP freezes the child exactly as a stuck process would be: no turn of its main
    loop, no heartbeat thread, nothing. Its heartbeat timeout (120 s here) is far away: only the
    supervisor's --child-timeout can explain a prompt recovery."""
    handles = [worker_app.plain.enqueue(worker_app.timed, "frozen", None, 1.0) for _ in range(4)]
    w = workers(
        "-P",
        "1",
        "-c",
        "2",
        "--burst",
        "--child-timeout",
        "2",
        "--heartbeat-timeout",
        "120",
        "--poll-interval",
        "0.5",
    )
    busy = wait_for(
        "a span in flight",
        lambda: query(database_url, "SELECT pid FROM public.spans WHERE ended IS NULL LIMIT 1"),
        30,
    )
    victim = busy[0]["pid"]
    assert parent_of(victim) == w.pid
    executor = worker_pids(database_url)[victim]
    owned = {
        r["workflow_id"]
        for r in query(
            database_url,
            "SELECT workflow_id FROM pgflow.workflow_status "
            "WHERE executor_id = %s AND status = 'PENDING'",
            (executor,),
        )
    }
    assert owned
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for("the frozen child gone", lambda: process_gone(victim), 15, 0.02)
    took = time.monotonic() - stopped
    print(f"frozen child {victim} killed {took:.2f}s after SIGSTOP (--child-timeout 2)")
    assert took < 2 + 1 + 3, took

    assert w.wait(60) == 0, w.stderr()[-3000:]
    (silent,) = w.events("worker_process_silent")
    assert silent["pid"] == victim and silent["silent_s"] >= 2
    (exited,) = [e for e in w.events("worker_process_exited") if e["pid"] == victim]
    assert exited["exit_code"] in (-signal.SIGABRT, -signal.SIGKILL)
    assert len(w.events("worker_process_started")) == 2
    rows = assert_all_success(database_url, 4)
    assert {i for i, r in rows.items() if r["recovery_attempts"] == 1} == owned
    assert all(r["recovery_attempts"] == 0 for i, r in rows.items() if i not in owned)
    finishers = {
        r["workflow_id"]: r["pid"]
        for r in query(
            database_url, "SELECT workflow_id, pid FROM public.spans WHERE ended IS NOT NULL"
        )
    }
    assert all(finishers[i] != victim for i in owned)
    assert all(h.status().status is pgflow.Status.SUCCESS for h in handles)


def test_a_busy_child_is_not_silent(
    app: pgflow.App, database_url: str, workers: StartWorker
) -> None:
    """Workflows run on threads: a step longer than --child-timeout keeps the main loop
    turning."""
    worker_app.plain.enqueue(worker_app.timed, "busy", None, 2.5)
    w = workers("-P", "1", "-c", "1", "--burst", "--child-timeout", "1", *FAST)
    assert w.wait(60) == 0, w.stderr()[-3000:]
    assert_all_success(database_url, 1)
    assert not w.events("worker_process_silent")
    assert len(w.events("worker_process_started")) == 1


def test_children_failing_at_every_start_halt_the_worker(
    database_url: str, workers: StartWorker
) -> None:
    """The task module imports in the supervisor and raises in every child (each imports it
    afresh): the worker exits with the documented code within a bounded time, saying why in
    one line, instead of respawning forever."""
    w = workers("-P", "2", *FAST, app="tests.boot_fail_app")
    started = time.monotonic()
    code = w.wait(30)
    took = time.monotonic() - started
    print(f"start-up failures: exit {code} after {took:.2f}s")
    assert code == EXIT_BOOT_FAILED == 3, w.stderr()[-3000:]
    assert took < 15
    # The halt comes at the 5th failure in a row; the other slot's child may be starting then.
    started_children = w.events("worker_process_started")
    assert BOOT_FAILURES_BEFORE_HALT <= len(started_children) <= BOOT_FAILURES_BEFORE_HALT + 1
    assert len(w.events("worker_process_exited")) == len(started_children)
    (halted,) = w.events("worker_halted")
    assert halted["level"] == "error"
    # The child's own error, in the loader's one line (file and line named).
    assert "RuntimeError at tests/boot_fail_app.py:" in halted["error"], halted
    assert "boot_fail_app cannot start in a forked worker process" in halted["error"], halted
    assert (
        f"{BOOT_FAILURES_BEFORE_HALT} worker processes in a row failed to start" in halted["reason"]
    )
    assert not w.events("worker_stopped")


def test_sighup_replaces_the_children_with_new_code_without_losing_work(
    database_url: str, workers: StartWorker, tmp_path: Path
) -> None:
    code_file = tmp_path / "code.txt"
    code_file.write_text("v1")
    client = pgflow.Client(database_url)
    try:
        first = [
            client.enqueue("jobs", "tests.reload_app.which_code", 1.5, app_version="reload-v1")
            for _ in range(4)
        ]
        w = workers(
            "-P",
            "2",
            "-c",
            "2",
            "--grace",
            "10",
            *FAST,
            app="tests.reload_app",
            env={"RELOAD_APP_FILE": str(code_file)},
        )
        old = wait_for(
            "two worker processes",
            lambda: len(worker_pids(database_url)) == 2 and set(worker_pids(database_url)),
            30,
        )
        wait_for(
            "work in flight",
            lambda: query(
                database_url, "SELECT 1 FROM pgflow.workflow_status WHERE status = 'PENDING'"
            ),
            30,
        )

        code_file.write_text("v2")
        os.kill(w.pid, signal.SIGHUP)
        second = [
            client.enqueue("jobs", "tests.reload_app.which_code", 0.1, app_version="reload-v1")
            for _ in range(4)
        ]
        new = wait_for(
            "two new worker processes",
            lambda: (
                len(set(worker_pids(database_url)) - old) == 2
                and set(worker_pids(database_url)) - old
            ),
            30,
        )
        wait_for("the old children gone", lambda: all(process_gone(p) for p in old), 30)
        assert all(parent_of(p) == w.pid for p in new)

        results = [h.result(timeout=30) for h in first + second]
        for h in first + second:
            st = h.status()
            assert st.status is pgflow.Status.SUCCESS and st.recovery_attempts == 0, st
        assert all(r["code"] == "v2" and r["pid"] in new for r in results[4:]), results
        # Work in flight at the SIGHUP finished where it ran, under the old code.
        assert any(r["pid"] in old for r in results[:4]), results
        for r in results[:4]:
            assert (r["code"], r["pid"] in old) in (("v1", True), ("v2", False)), results
        assert w.proc.poll() is None  # the supervisor goes on
        (reloading,) = w.events("worker_reloading")
        assert set(reloading["replacing"]) == old
        assert all(e["exit_code"] == 0 for e in w.events("worker_process_exited"))
        os.kill(w.pid, signal.SIGTERM)
        assert w.wait(30) == 0, w.stderr()[-3000:]
    finally:
        client.close()


def test_children_hanging_in_start_up_are_killed_and_halt_the_worker(
    database_url: str, workers: StartWorker
) -> None:
    """A child that never becomes ready is silent from its fork: killed after --child-timeout
    and counted as a start-up failure."""
    w = workers(
        "-P",
        "2",
        "--child-timeout",
        "1",
        *FAST,
        app="tests.boot_fail_app",
        env={"BOOT_FAIL_APP_MODE": "hang"},
    )
    started = time.monotonic()
    code = w.wait(60)
    took = time.monotonic() - started
    print(f"start-up hangs: exit {code} after {took:.2f}s")
    assert code == EXIT_BOOT_FAILED, w.stderr()[-3000:]
    assert took < 30
    silent = w.events("worker_process_silent")
    assert len(silent) >= BOOT_FAILURES_BEFORE_HALT and not any(e["ready"] for e in silent)
    (halted,) = w.events("worker_halted")
    assert "failed to start" in halted["reason"]
    assert "silent for 1s while starting" in halted["error"]
