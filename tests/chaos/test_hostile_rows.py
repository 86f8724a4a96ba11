"""Rows no pgflow call would write (an older client, a manual INSERT): a timeout that
overflows PostgreSQL's interval, an infinite deadline, an unknown serializer, inputs that are
not pgflow's. Each is claimed without error and ends in a final state that names its problem;
none blocks its queue: the good workflows behind it all run."""

from __future__ import annotations

from typing import Any

import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import HEARTBEAT, query

pytestmark = [pytest.mark.chaos]

GOOD = 50

# column overrides -> the final status it must reach, and words its recorded error must hold
HOSTILE: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("timeout_ms", "9223372036854775807", "SUCCESS", ()),  # interval overflow
    ("timeout_ms", "100000000000000000", "SUCCESS", ()),  # timeout=1e14 s
    ("deadline", "'infinity'", "SUCCESS", ()),  # psycopg cannot load it
    ("timeout_ms", "-9223372036854775808", "CANCELLED", ("deadline",)),
    ("deadline", "'-infinity'", "CANCELLED", ("deadline",)),
    ("serializer", "'bogus'", "ERROR", ("unknown serializer", "bogus")),
    ("inputs", "'not json'", "ERROR", ("not valid pgflow JSON",)),
    ("inputs", """'{"args": 5}'""", "ERROR", ("not an {args, kwargs} record",)),
]


def insert_hostile(url: str, template_id: str, *, orphans: bool = False) -> list[str]:
    """Copies of an ENQUEUED row with one hostile column each, at the head of the queue; or
    (``orphans``) PENDING rows without an owner, which recovery adopts."""
    ids = []
    for n, (column, value, _, _) in enumerate(HOSTILE):
        wid = f"{'orphan' if orphans else 'hostile'}-{n}"
        columns = [
            "name",
            "status",
            "queue_name",
            "partition_key",
            "app_version",
            "max_recovery_attempts",
            "serializer",
            "inputs",
            "timeout_ms",
            "deadline",
        ]
        chosen = [value if c == column else c for c in columns]
        if orphans:
            chosen[1] = "'PENDING'"
        query(
            url,
            f"INSERT INTO pgflow.workflow_status (workflow_id, priority, "
            f"{', '.join(columns)}) SELECT %s, -1, {', '.join(chosen)} "
            "FROM pgflow.workflow_status WHERE workflow_id = %s RETURNING 1",
            (wid, template_id),
        )
        ids.append(wid)
    return ids


@pytest.mark.parametrize("queue", ["chaos", "per_proc", "parts"])
def test_hostile_rows_never_block_their_queue(
    capp: pgflow.App, chaos_url: str, workers: Any, queue: str
) -> None:
    q = capp.queues[queue]
    if q.partitioned:
        q = q.options(partition_key="k")
    good = [q.enqueue(chaos_app.five, i, 0.0) for i in range(GOOD)]
    hostile = insert_hostile(chaos_url, good[0].workflow_id)
    if queue == "chaos":  # adoption computes the deadline too
        hostile += insert_hostile(chaos_url, good[0].workflow_id, orphans=True)
    w = workers("-P", "1", "-c", "4", *HEARTBEAT, "--burst", "-Q", queue)
    code = w.wait(120)
    found = {
        r["workflow_id"]: r
        for r in query(chaos_url, "SELECT workflow_id, status, error FROM pgflow.workflow_status")
    }
    left = {k: r["status"] for k, r in found.items() if r["status"] in ("ENQUEUED", "PENDING")}
    print(
        f"\n{queue}: exit {code}; left {left}; hostile "
        f"{[(found[h]['status'], (found[h]['error'] or '')[:80]) for h in hostile]}; "
        f"claim failures {len(w.events('claim_failed'))}"
    )
    assert code == 0, w.stderr()[-3000:]
    assert not left
    assert [h.result(timeout=5) for h in good] == [chaos_app.five_result(i) for i in range(GOOD)]
    expected = HOSTILE * (len(hostile) // len(HOSTILE))
    for wid, (column, value, status, words) in zip(hostile, expected, strict=True):
        row = found[wid]
        assert row["status"] == status, (column, value, row)
        for word in words:
            assert word in (row["error"] or ""), (column, value, row["error"])
    assert not w.events("claim_failed")
    # Every row, hostile ones included, reads back through the API.
    for wid in hostile:
        capp.retrieve(wid).status()
