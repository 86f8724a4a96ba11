"""Every connection to the test's database killed (pg_terminate_backend) every 200 ms."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import HEARTBEAT, check_all, query, wait_terminal

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

PROCESSES, THREADS = 2, 4


class Terminator(threading.Thread):
    """Kills every other backend of the database every ``period`` seconds, counting the
    connections each time."""

    def __init__(self, url: str, period: float) -> None:
        super().__init__(daemon=True)
        self.url, self.period = url, period
        self.stop = threading.Event()
        self.killed = 0
        self.rounds = 0
        self.peak = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.wait(self.period):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchone()
                assert row is not None
                self.peak = max(self.peak, row[0])
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
                assert row is not None
                self.killed += row[0]
                self.rounds += 1


def test_connections_killed_every_200ms(
    capp: pgflow.App, chaos_url: str, workers: Any, soak: int
) -> None:
    """Work keeps flowing while every backend of the database dies 5 times a second; all
    workflows end SUCCESS with every oracle holding; no process needs more connections than
    its pool (threads + 4) and its two listeners."""
    storm = 20.0 if soak == 1 else 60.0
    n = 600 * (1 if soak == 1 else 3)
    handles = chaos_app.chaos.enqueue_many(chaos_app.five, [(i, 0.05) for i in range(n)])
    expected = {h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(handles)}
    capp.close_db()  # the test holds no pooled connection during the storm
    w = workers("-P", str(PROCESSES), "-c", str(THREADS), *HEARTBEAT)
    time.sleep(1.0)
    killer = Terminator(chaos_url, 0.2)
    killer.start()
    began = time.monotonic()
    time.sleep(storm)
    killer.stop.set()
    killer.join(5)
    ended = time.monotonic()
    done_in_storm = query(
        chaos_url,
        "SELECT count(*) AS n FROM pgflow.workflow_status "
        "WHERE status = 'SUCCESS' AND completed_at > "
        "clock_timestamp() - %s * interval '1 second'",
        (time.monotonic() - began,),
    )[0]["n"]
    wait_terminal(chaos_url, n, 180 * soak)
    v = check_all(
        chaos_url,
        expected=expected,
        steps=chaos_app.FIVE_STEPS,
        plain=chaos_app.FIVE_PLAIN,
        tx=chaos_app.FIVE_TX,
        limit=8,
        per_pid=THREADS,
        limit_queue="chaos",
    )
    bound = PROCESSES * (THREADS + 4) + PROCESSES * 2 + 3
    exits = w.events("worker_process_exited")
    warnings: dict[str, int] = {}
    for e in w.events():
        if e.get("level") in ("warning", "error"):
            warnings[e["event"]] = warnings.get(e["event"], 0) + 1
    print(
        f"\nconnection storm {ended - began:.0f}s: {killer.rounds} rounds killed "
        f"{killer.killed} backends; {done_in_storm} workflows finished during it; peak "
        f"{killer.peak} connections (bound {bound}); worker exits "
        f"{[e['exit_code'] for e in exits]}; log warnings {warnings}; {v.line()}"
    )
    assert done_in_storm > 0
    assert killer.peak <= bound
