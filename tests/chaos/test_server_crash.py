"""The server crashes right after a claim, on a private cluster (never the machine's own).

Claims commit asynchronously: with the WAL writer slowed to 10 s and no other durable write
for a while, an immediate stop (a crash: unwritten WAL is lost) makes the server forget a
claim its worker already acted on. The same executor then claims the row again, while the
first run is still inside step 1. Whatever the interleaving, a step whose checkpoint
committed never runs again, and the first run, whose claim the server forgot, writes nothing:
each workflow's steps 2 and 3 run exactly once (their bodies append to a file outside the
database, which the crashes do not touch).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgflow.db.migrate import migrate
from pgflow.db.pool import Database
from tests.chaos.harness import query
from tests.private_cluster import Cluster, start_private_cluster
from tests.processes import Worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

APP = "tests.chaos.fence_app"
ROUNDS = 4
PER_ROUND = 3


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = start_private_cluster(wal_writer_delay="10s", checkpoint_timeout="1h")
    try:
        yield c
    finally:
        c.remove()


def _ledger(path: Path) -> Counter[tuple[str, str]]:
    if not path.exists():
        return Counter()
    return Counter(tuple(line.split()[:2]) for line in path.read_text().splitlines())  # type: ignore[misc]


def _all_in(url: str, ids: list[str], status: str) -> bool:
    rows = query(
        url,
        "SELECT count(*) AS n FROM pgflow.workflow_status "
        "WHERE workflow_id = ANY(%s) AND status = %s",
        (ids, status),
    )
    return bool(rows[0]["n"] == len(ids))


def test_a_forgotten_claim_never_runs_a_completed_step_again(
    cluster: Cluster, tmp_path: Path, monkeypatch: Any
) -> None:
    url = cluster.url
    db = Database(url, "pgflow")
    migrate(db)
    db.close()
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("FENCE_LEDGER", str(ledger))
    monkeypatch.setenv("PGFLOW_DATABASE_URL", url)
    from tests.chaos import fence_app

    fence_app.app.close_db()
    fence_app.app.settings = fence_app.app.settings.replace(database_url=url)
    env = {"FENCE_LEDGER": str(ledger), "FENCE_STEP1": "2.5", "FENCE_STEP2": "3"}
    # No heartbeat for a minute: a heartbeat is a durable write, which would flush the claim.
    w = Worker(
        url,
        tmp_path,
        "-P",
        "1",
        "-c",
        "16",
        "--poll-interval",
        "0.2",
        "--heartbeat-interval",
        "60",
        "--heartbeat-timeout",
        "180",
        app=APP,
        env=env,
    )
    expected: dict[str, int] = {}
    reclaimed = 0
    try:
        wait_for("the worker's executor", lambda: query(url, "SELECT 1 FROM pgflow.executors"), 30)
        for r in range(ROUNDS):
            queue = fence_app.free if r % 2 == 0 else fence_app.limited
            hs = [queue.enqueue(fence_app.three, r * 10 + i) for i in range(PER_ROUND)]
            ids = [h.workflow_id for h in hs]
            expected.update({h.workflow_id: r * 10 + i + 3 for i, h in enumerate(hs)})
            wait_for(
                "the round's claims",
                functools.partial(_all_in, url, ids, "PENDING"),
                30,
                0.005,
            )
            cluster.crash()
            cluster.start()
            wait_for(
                "the round's end",
                functools.partial(_all_in, url, ids, "SUCCESS"),
                60,
                0.1,
            )
            time.sleep(0.5)  # a stale run would write its later steps now
            runs = _ledger(ledger)
            reclaimed += sum(1 for wid in ids if runs[(wid, "s1")] > 1)
        runs = _ledger(ledger)
        rows = query(url, "SELECT workflow_id, status, output FROM pgflow.workflow_status")
        print(
            f"\nserver crashes after claims: {ROUNDS} rounds of {PER_ROUND}; claims the "
            f"server forgot and the worker re-claimed while the first run lived: {reclaimed}; "
            f"step bodies run: {sum(runs.values())}"
        )
        assert {r["workflow_id"]: r["status"] for r in rows} == dict.fromkeys(expected, "SUCCESS")
        for wid, value in expected.items():
            assert fence_app.app.retrieve(wid).result(timeout=5) == value
            assert runs[(wid, "s2")] == 1, (wid, runs)
            assert runs[(wid, "s3")] == 1, (wid, runs)
            assert 1 <= runs[(wid, "s1")] <= 2, (wid, runs)
        # The fault was real: some claims were forgotten and taken again while the first
        # run still lived (else this test proved nothing).
        assert reclaimed > 0
        assert not w.events("worker_process_exited")
    finally:
        w.kill()
        fence_app.app.close_db()
