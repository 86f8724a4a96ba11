"""The PostgreSQL server restarted (twice, ``-m immediate``) and then away for longer than a
minute, under load, on a private cluster of the test's own (never the machine's server).

Must hold: no workflow ends because the database was away (all SUCCESS, every oracle holds);
no worker process exits (the same pids throughout); nobody is declared dead for the silence the
outage caused; work resumes within about a second of the server's return (a running
workflow's next checkpoint, and a new enqueue's start, with a 30 s poll interval, so LISTEN is
back too); and the log tells the outage in a few lines, not dozens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgflow.db.migrate import migrate
from pgflow.db.pool import Database
from tests.chaos import chaos_app
from tests.chaos.harness import AUDIT, HEARTBEAT, check_all, query, wait_terminal, worker_pids
from tests.private_cluster import Cluster, start_private_cluster
from tests.processes import process_gone, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

# Longer than the 60 s that used to fail every running workflow (DatabaseUnavailable).
OUTAGE = 65.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = start_private_cluster()
    try:
        yield c
    finally:
        c.remove()


@pytest.fixture
def private_chaos(cluster: Cluster) -> Iterator[str]:
    """The chaos app's tables on the private cluster; the chaos app pointed at it."""
    url = cluster.url
    db = Database(url, "pgflow")
    migrate(db)
    db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(chaos_app.TABLES)
        conn.execute(AUDIT)
    a = chaos_app.app
    a.close_db()
    saved = a.settings
    a.settings = a.settings.replace(database_url=url)
    yield url
    a.close_db()
    a.settings = saved


def test_server_restarts_and_a_long_outage(
    cluster: Cluster, private_chaos: str, workers: Any, soak: int
) -> None:
    url = private_chaos
    outage = OUTAGE * (1 if soak == 1 else 2)
    n = 300 * soak
    handles = chaos_app.chaos.enqueue_many(chaos_app.five, [(i, 0.1) for i in range(n)])
    expected = {h.workflow_id: chaos_app.five_result(i) for i, h in enumerate(handles)}
    w = workers("-P", "2", "-c", "4", *HEARTBEAT, "--poll-interval", "30", url=url)
    before = wait_for(
        "two worker processes", lambda: len(worker_pids(url)) == 2 and set(worker_pids(url)), 30
    )
    assert before == set(w.children())
    timeline = []
    time.sleep(2.0)
    for _ in range(2):
        t = time.monotonic()
        cluster.crash()
        cluster.start()
        timeline.append(f"restart {time.monotonic() - t:.1f}s")
        time.sleep(3.0)
    cluster.stop("immediate")
    down_at = time.monotonic()
    time.sleep(outage)
    cluster.start()
    back_at = time.time()
    timeline.append(f"outage {time.monotonic() - down_at:.1f}s")
    # The first checkpoint written after the server's return.
    first = wait_for(
        "a checkpoint after the outage",
        lambda: query(
            url,
            "SELECT extract(epoch FROM min(completed_at))::float8 AS t "
            "FROM pgflow.operation_outputs WHERE completed_at > to_timestamp(%s)",
            (back_at,),
        )[0]["t"],
        30,
        0.05,
    )
    resumed = first - back_at
    wait_terminal(url, n, 120 * soak)
    v = check_all(
        url,
        expected=expected,
        steps=chaos_app.FIVE_STEPS,
        plain=chaos_app.FIVE_PLAIN,
        tx=chaos_app.FIVE_TX,
        limit=8,
        per_pid=4,
        limit_queue="chaos",
    )
    latencies = []
    for _ in range(3):
        time.sleep(0.5)
        h = chaos_app.chaos.enqueue(chaos_app.five, 0, 0.0)
        h.result(timeout=30)
        row = query(
            url,
            "SELECT started_at - created_at AS d FROM pgflow.workflow_status "
            "WHERE workflow_id = %s",
            (h.workflow_id,),
        )[0]
        latencies.append(row["d"].total_seconds())
    after = set(w.children())
    text = w.stderr()
    unreachable = w.events("database_unreachable")
    reconnected = w.events("database_reconnected")
    warnings = [e for e in w.events() if e.get("level") in ("warning", "error")]
    print(
        f"\nserver chaos ({', '.join(timeline)}): {v.line()}; worker pids before "
        f"{sorted(before)} after {sorted(after)}; first checkpoint {resumed:.2f}s after the "
        f"server was back; enqueue -> start after it {[round(x, 3) for x in latencies]}s; "
        f"warnings and errors logged: {len(warnings)} "
        f"({sorted({str(e.get('event')) for e in warnings})}); reconnected after "
        f"{[e.get('seconds') for e in reconnected]}s"
    )
    assert not process_gone(w.pid)
    assert after == before
    assert not w.events("worker_process_exited")
    assert not w.events("executor_declared_dead") and not w.events("worker_declared_dead")
    assert (
        query(url, "SELECT count(*) AS n FROM pgflow.workflow_status WHERE status <> 'SUCCESS'")[0][
            "n"
        ]
        == 0
    )
    assert resumed <= 2.0
    assert all(x <= 2.0 for x in latencies)
    # The outage told once per process (and its end), not once per failed statement.
    assert 1 <= len(unreachable) <= 2 * 3, unreachable
    assert any(float(e["seconds"]) >= outage * 0.9 for e in reconnected), reconnected
    assert "psycopg.pool" not in text and "discarding closed connection" not in text
    assert len(warnings) <= 40, sorted(str(e.get("event")) for e in warnings)
