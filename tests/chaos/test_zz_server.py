"""The PostgreSQL server itself restarted (twice, ``-m immediate``) and stopped for a while,
under load. Runs last (``chaos_server``), and only against this machine's cluster 15/main,
which it restarts for real (every other test on the server sees the outage too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import psycopg
import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT,
    check_all,
    process_gone,
    query,
    wait_for,
    wait_terminal,
    worker_pids,
)

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.chaos_server]

CLUSTER = ("15", "main")


def local_cluster(url: str) -> bool:
    """The run's server is this machine's cluster 15/main, and we may restart it."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    if str(info.get("host")) not in ("127.0.0.1", "localhost") or \
            str(info.get("port") or "5432") != "5432":
        return False
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster"):
        return False
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    return any(line.split()[:3] == [*CLUSTER, "5432"] for line in out.splitlines())


def pg_ctl(action: str) -> None:
    mode = ["-m", "immediate"] if action in ("restart", "stop") else []
    subprocess.run(["pg_ctlcluster", *CLUSTER, action, *mode], check=True, timeout=120,
                   capture_output=True)


def server_up(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def test_server_restarts_and_outage(pg_server_url: str, capp: pgflow.App, chaos_url: str,
                                    workers: Any, soak: int) -> None:
    """Two immediate restarts and one outage (10 s; 30 s under --soak) while workflows run:
    none is lost (all SUCCESS, every oracle holds), no worker process exits (the same pids
    throughout), and LISTEN is back: with a 30 s poll interval, a new enqueue after the
    outage starts within 2 s."""
    if not local_cluster(pg_server_url):
        pytest.skip("the server is not this machine's cluster 15/main")
    outage = 10.0 if soak == 1 else 30.0
    n = 300 * soak
    handles = chaos_app.chaos.enqueue_many(chaos_app.five, [(i, 0.1) for i in range(n)])
    expected = {h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(handles)}
    w = workers("-P", "2", "-c", "4", *HEARTBEAT, "--poll-interval", "30")
    before = wait_for("two worker processes", lambda: len(worker_pids(chaos_url)) == 2 and
                      set(worker_pids(chaos_url)), 30)
    assert before == set(w.children())
    timeline = []
    try:
        time.sleep(2.0)
        for _ in range(2):
            t = time.monotonic()
            pg_ctl("restart")
            timeline.append(f"restart {time.monotonic() - t:.1f}s")
            time.sleep(3.0)
        t = time.monotonic()
        pg_ctl("stop")
        time.sleep(outage)
    finally:
        if not server_up(pg_server_url):
            pg_ctl("start")
        timeline.append(f"outage {time.monotonic() - t:.1f}s")
    wait_for("the server back", lambda: server_up(pg_server_url), 60, 0.2)
    wait_terminal(chaos_url, n, 120 * soak)
    v = check_all(chaos_url, expected=expected, steps=chaos_app.FIVE_STEPS,
                  plain=chaos_app.FIVE_PLAIN, tx=chaos_app.FIVE_TX, limit=8, per_pid=4,
                  limit_queue="chaos")
    latencies = []
    for _ in range(3):
        time.sleep(0.5)
        h = chaos_app.chaos.enqueue(chaos_app.five, 0, 0.0)
        h.result(timeout=30)
        row = query(chaos_url, "SELECT started_at - created_at AS d FROM pgflow.workflow_status "
                               "WHERE workflow_id = %s", (h.workflow_id,))[0]
        latencies.append(row["d"].total_seconds())
    after = set(w.children())
    print(f"\nserver chaos ({', '.join(timeline)}): {v.line()}; worker pids before "
          f"{sorted(before)} after {sorted(after)}; exits "
          f"{[e['exit_code'] for e in w.events('worker_process_exited')]}; declared dead "
          f"{len(w.events('executor_declared_dead'))}; enqueue -> start after it "
          f"{[round(x, 3) for x in latencies]}s")
    assert not process_gone(w.pid)
    assert after == before
    assert not w.events("worker_process_exited")
    assert all(x <= 2.0 for x in latencies)
