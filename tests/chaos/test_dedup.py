"""Deduplication under racing enqueuers, while workers end workflows and free their ids."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import HEARTBEAT, query, stats, wait_terminal

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def race(
    ids: list[str], threads: int, seconds: float | None, seed: int
) -> tuple[dict[str, list[str]], int, list[str]]:
    """``threads`` threads enqueue every id (each in its own random order): once, or again
    and again for ``seconds``. Returns the winners per id, the Deduplicated count, and the
    problems (a Deduplicated naming no holder, any other error)."""
    won: dict[str, list[str]] = defaultdict(list)
    lost = 0
    problems: list[str] = []
    lock = threading.Lock()
    end = None if seconds is None else time.monotonic() + seconds

    def run(n: int) -> None:
        nonlocal lost
        rng = random.Random(seed * 1000 + n)
        while True:
            order = ids[:]
            rng.shuffle(order)
            for dedup_id in order:
                try:
                    h = chaos_app.dedup.options(dedup_id=dedup_id).enqueue(chaos_app.normal, 1)
                except pgflow.Deduplicated as exc:
                    with lock:
                        lost += 1
                        if not exc.existing_workflow_id and seconds is None:
                            problems.append(f"{dedup_id}: Deduplicated without its holder")
                    continue
                except Exception as exc:  # collected, asserted below
                    with lock:
                        problems.append(f"{dedup_id}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    won[dedup_id].append(h.workflow_id)
            if end is None or time.monotonic() >= end:
                return

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return won, lost, problems


def test_dedup_races(capp: pgflow.App, chaos_url: str, workers: Any, soak: int) -> None:
    """20 threads x 200 ids (soak: 50 x 1000): exactly one active workflow per id, the rest
    Deduplicated naming it. Then workers end them while the threads keep enqueueing: an id is
    never held twice at once, and is usable again as soon as its workflow is terminal."""
    threads, n = (20, 200) if soak == 1 else (50, 1000)
    ids = [f"id-{k}-'; DROP TABLE x;--" for k in range(n)]
    started = time.monotonic()
    won, lost, problems = race(ids, threads, None, 1)
    took = time.monotonic() - started
    assert not problems, problems[:5]
    assert all(len(won[i]) == 1 for i in ids), [(i, won[i]) for i in ids if len(won[i]) != 1]
    assert lost == (threads - 1) * n
    active = query(
        chaos_url,
        "SELECT dedup_id, count(*) AS n FROM pgflow.workflow_status "
        "WHERE status IN ('ENQUEUED', 'PENDING') GROUP BY dedup_id",
    )
    assert {r["dedup_id"]: r["n"] for r in active} == {i: 1 for i in ids}

    w = workers("-P", "2", "-c", "4", *HEARTBEAT, "-Q", "dedup")
    won2, lost2, problems2 = race(ids, threads, 6.0, 2)
    assert not problems2, problems2[:5]
    total = n + sum(len(v) for v in won2.values())
    wait_terminal(chaos_url, total, 120)
    # From the audit: each row's active interval [insert, terminal]; per id, none overlap.
    rows = query(
        chaos_url,
        """
        SELECT w.dedup_id, w.workflow_id, i.at AS since, t.at AS until
        FROM pgflow.workflow_status w
        JOIN public.wf_audit i ON i.workflow_id = w.workflow_id AND i.op = 'I'
        JOIN public.wf_audit t ON t.workflow_id = w.workflow_id
             AND t.new_status IN ('SUCCESS', 'ERROR', 'CANCELLED',
                                  'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
        ORDER BY w.dedup_id, i.at""",
    )
    assert len(rows) == total
    per_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        per_id[r["dedup_id"]].append(r)
    gaps = []
    for dedup_id, rs in per_id.items():
        for before, after in itertools.pairwise(rs):
            assert after["since"] >= before["until"], (dedup_id, before, after)
            gaps.append((after["since"] - before["until"]).total_seconds())
    w.kill()
    again = [chaos_app.dedup.options(dedup_id=i).enqueue(chaos_app.normal, 1) for i in ids]
    print(
        f"\ndedup races: {threads} threads x {n} ids: {n} won, {lost} Deduplicated in "
        f"{took:.2f}s; while workers ran: {total - n} more won, {lost2} Deduplicated, "
        f"never two active at once; terminal -> next enqueue won: {stats(gaps)}"
    )
    assert all(h.status().status == pgflow.Status.ENQUEUED for h in again)
