"""A hypothesis state machine against the real database: simulated workers claim concurrently
with the real claim function, finish, crash, miss heartbeats and get reaped, while the database
clock moves; the queues' flow control must hold after every step.

Each worker is a WorkerProcess that never runs its loop: the test calls its claim function
(``WorkerProcess._claim``, the one ``pgflow worker`` uses) from threads, and keeps the books a
worker process keeps (what it holds, per queue). Each example gets its own schema and queues
with random limits; at teardown a real in-process worker (pgflow.testing.drain) runs what is
left and every workflow must end terminal.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import pgflow
from pgflow import serialization
from pgflow.db.migrate import drop_schema
from pgflow.executor import HOSTNAME, new_executor_id
from pgflow.outcomes import finish
from pgflow.queues import Queue
from pgflow.records import Outcome, Status
from pgflow.recovery import reap_dead_executors, release_executors
from pgflow.testing import (
    Clock,
    HistoryRow,
    check_history,
    check_rows,
    drain,
    enqueue_plans,
    load_history,
)
from pgflow.worker.config import WorkerConfig
from pgflow.worker.process import WorkerProcess

MAX_RECOVERY = 2
_schemas = itertools.count()

queue_specs = st.fixed_dictionaries(
    {
        "concurrency": st.none() | st.integers(1, 3),
        "worker_concurrency": st.none() | st.integers(1, 2),
        "rate_limit": st.none()
        | st.builds(pgflow.Rate, st.integers(1, 4), st.sampled_from([0.5, 1.0, 2.0])),
        "priority_enabled": st.booleans(),
        "partitioned": st.booleans(),
    }
)


class SimWorker:
    """One simulated worker process: an executor row, the real claim function, its books."""

    def __init__(self, app: pgflow.App, queues: list[Queue], threads: int) -> None:
        self.app = app
        self.threads = threads
        self.executor_id = new_executor_id()
        self.process = WorkerProcess(
            app, WorkerConfig(threads=threads, queues=queues), self.executor_id
        )
        self.held: dict[str, tuple[str, Any]] = {}  # workflow id -> (queue, fence)
        app.db.fetchone(
            "register_executor",
            {
                "executor_id": self.executor_id,
                "hostname": HOSTNAME,
                "pid": os.getpid(),
                "app_version": app.app_version,
                "kind": "worker",
                "queues": [q.name for q in queues],
                "names": ["job"],
            },
        )

    def held_in(self, queue: str) -> int:
        return sum(1 for name, _ in self.held.values() if name == queue)

    def claim(self, queue: Queue, rotation: int) -> list[dict[str, Any]]:
        free = self.threads - len(self.held)
        if free <= 0:
            return []
        with self.process._lock:
            self.process.local_running[queue.name] = self.held_in(queue.name)
        self.process._rotation = rotation
        rows = self.process._claim(queue, free)
        for r in rows:
            self.held[r["workflow_id"]] = (queue.name, r["fence"])
        return rows

    def deregister(self) -> None:
        self.app.db.run("deregister_executor", {"executor_id": self.executor_id})


class FlowMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.app: pgflow.App | None = None
        self.queues: list[Queue] = []
        self.workers: list[SimWorker] = []
        self.zombies: list[SimWorker] = []  # declared dead while holding work; fenced out
        self.rotation = 0

    # -- set-up ----------------------------------------------------------------------------------

    @initialize(
        specs=st.lists(queue_specs, min_size=1, max_size=3),
        n_workers=st.integers(2, 3),
        threads=st.integers(1, 3),
    )
    def start(self, specs: list[dict[str, Any]], n_workers: int, threads: int) -> None:
        app = pgflow.App(
            "flow", database_url=self.url, schema=f"flow_{next(_schemas)}", app_version="flow-1"
        )
        self.app = app

        @app.workflow(name="job", max_recovery_attempts=MAX_RECOVERY)
        def job(i: int) -> int:
            return i

        self.queues = [app.queue(f"q{i}", **spec) for i, spec in enumerate(specs)]
        self.threads = threads
        self.clock = Clock(app)
        self.workers = [self._new_worker() for _ in range(n_workers)]

    def _new_worker(self) -> SimWorker:
        assert self.app is not None
        return SimWorker(self.app, self.queues, self.threads)

    def teardown(self) -> None:
        app = self.app
        if app is None:
            return
        try:
            # The live workers finish what they hold; then a real worker runs the rest.
            for w in self.workers:
                self._finish(w, sorted(w.held), [Status.SUCCESS] * len(w.held))
                w.deregister()
            summary = drain(app, self.queues, clock=self.clock, timeout=30)
            assert summary.left == 0
            for q in self.queues:
                rows = check_history(app, q, check_order=False)
                stuck = [r.workflow_id for r in rows if r.status in ("ENQUEUED", "PENDING")]
                assert not stuck, f"not terminal after the drain: {stuck}"
        finally:
            drop_schema(app.db)
            app.shutdown()

    # -- rules -----------------------------------------------------------------------------------

    @rule(data=st.data())
    def enqueue(self, data: st.DataObject) -> None:
        assert self.app is not None
        q = self.queues[data.draw(st.integers(0, len(self.queues) - 1), label="queue")]
        plan = data.draw(
            enqueue_plans(
                q, args=st.tuples(st.integers(0, 99)), min_size=1, max_size=4, max_delay=3.0
            )
        )
        for op in plan:
            active = (
                op.dedup_id is not None
                and self.app.db.fetchone(
                    "find_active_dedup", {"queue_name": q.name, "dedup_id": op.dedup_id}
                )
                is not None
            )
            handle = op.enqueue(q, "job")
            assert (handle is None) == active, (
                f"dedup id {op.dedup_id!r} {'was' if active else 'was not'} active, yet the "
                f"enqueue {'went through' if handle else 'was refused'}"
            )

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        """Two or three workers claim at the same moment, each from a queue of its choice."""
        order = data.draw(st.permutations(range(len(self.workers))))
        count = data.draw(st.integers(1, len(self.workers)))
        picks = [
            (
                self.workers[i],
                self.queues[
                    data.draw(st.integers(0, len(self.queues) - 1), label=f"queue of worker {i}")
                ],
            )
            for i in order[:count]
        ]
        self.rotation += 1
        barrier = threading.Barrier(len(picks))
        results: list[list[dict[str, Any]]] = [[] for _ in picks]
        errors: list[BaseException] = []

        def claim_one(i: int, worker: SimWorker, queue: Queue) -> None:
            try:
                barrier.wait(10)
                results[i] = worker.claim(queue, self.rotation + i)
            except BaseException as exc:  # re-raised on the test's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=claim_one, args=(i, w, q)) for i, (w, q) in enumerate(picks)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if errors:
            raise errors[0]
        for (_, queue), rows in zip(picks, results, strict=True):
            self._check_claim_order(queue, [r["workflow_id"] for r in rows])

    # Which rows a worker holds depends on how the concurrent claims raced, so the draws below
    # are positions in fixed ranges, never choices among what is held: hypothesis needs the
    # same choices to mean the same draws on every run.
    @rule(
        who=st.integers(0, 5),
        picks=st.lists(st.integers(0, 7), min_size=1, max_size=4),
        failed=st.lists(st.booleans(), min_size=4, max_size=4),
    )
    def finish(self, who: int, picks: list[int], failed: list[bool]) -> None:
        holders = [w for w in self.workers + self.zombies if w.held]
        if not holders:
            return
        worker = holders[who % len(holders)]
        held = sorted(worker.held)
        ids = list(dict.fromkeys(held[p % len(held)] for p in picks))
        self._finish(
            worker, ids, [Status.ERROR if f else Status.SUCCESS for f in failed][: len(ids)]
        )

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A worker process dies; its supervisor hands its work back, charged."""
        assert self.app is not None
        i = data.draw(st.integers(0, len(self.workers) - 1))
        dead = self.workers[i]
        released = release_executors(self.app, [dead.executor_id], charge=True)
        assert {r["workflow_id"] for r in released} == set(dead.held)
        dead.deregister()
        self.workers[i] = self._new_worker()

    @rule(data=st.data())
    def heartbeats_expire(self, data: st.DataObject) -> None:
        """Time jumps past the heartbeat timeout; only some workers heartbeat in time, and one
        of them reaps the others (a machine stopped, or froze and will wake up later)."""
        assert self.app is not None
        alive = data.draw(st.lists(st.integers(0, len(self.workers) - 1), min_size=1, unique=True))
        self.clock.advance(self.app.settings.heartbeat_timeout + 1)
        for i in alive:
            assert (
                self.app.db.fetchone("heartbeat", {"executor_id": self.workers[i].executor_id})
                is not None
            )
        reaped = reap_dead_executors(self.app, self.workers[alive[0]].executor_id, [])
        silent = [i for i in range(len(self.workers)) if i not in alive]
        assert set(reaped) == {self.workers[i].executor_id for i in silent}
        for i in silent:
            self.zombies.append(self.workers[i])
            self.workers[i] = self._new_worker()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def flow_control_holds(self) -> None:
        app = self.app
        if app is None:
            return
        pending_of: dict[str, set[str]] = {}
        for q in self.queues:
            rows = load_history(app, q)
            # Concurrency (global, per partition, per worker) and rate windows over the whole
            # recorded history, and dedup ids unique among active rows.
            check_rows(q, rows, app_version=app.app_version, names={"job"}, check_order=False)
            running = Counter(r.partition_key for r in rows if r.status == "PENDING")
            if q.concurrency is not None:
                assert max(running.values(), default=0) <= q.concurrency, (q, running)
            for r in rows:
                over = r.recovery_attempts > MAX_RECOVERY
                assert over == (r.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"), r
                if r.status == "PENDING":
                    assert r.executor_id is not None, f"{r.workflow_id} PENDING without owner"
                    pending_of.setdefault(r.executor_id, set()).add(r.workflow_id)
            for w in self.workers:
                if q.worker_concurrency is None:
                    continue
                if q.partitioned:  # per worker and key
                    mine = Counter(
                        r.partition_key
                        for r in rows
                        if r.status == "PENDING" and r.executor_id == w.executor_id
                    )
                    assert max(mine.values(), default=0) <= q.worker_concurrency, (q, mine)
                else:
                    assert w.held_in(q.name) <= q.worker_concurrency, (q, w.held)
        held: Counter[str] = Counter()
        for w in self.workers:
            assert len(w.held) <= w.threads
            # The database and the worker's books agree on what it holds...
            assert pending_of.pop(w.executor_id, set()) == set(w.held)
            held.update(w.held.keys())
        # ...no workflow is held by two live workers, and nobody else holds any.
        assert not [wid for wid, n in held.items() if n > 1]
        assert not pending_of, f"PENDING under executors that are not running: {pending_of}"

    # -- helpers ---------------------------------------------------------------------------------

    def _finish(self, worker: SimWorker, ids: list[str], statuses: list[Status]) -> None:
        assert self.app is not None
        ser = self.app.serializer
        outcomes = [
            Outcome(
                wid,
                worker.held[wid][1],
                status,
                output=serialization.dumps_value(ser, 0, max_bytes=100, what="x")
                if status is Status.SUCCESS
                else None,
                error=serialization.dumps_error(RuntimeError("failed"))
                if status is Status.ERROR
                else None,
            )
            for wid, status in zip(ids, statuses, strict=True)
        ]
        written = finish(self.app, outcomes, executor_id=worker.executor_id)
        if worker in self.zombies:
            assert written == set(), f"a reaped executor wrote {written}"
        else:
            assert written == set(ids)
        for wid in ids:
            del worker.held[wid]

    def _check_claim_order(self, queue: Queue, claimed: list[str]) -> None:
        """Nothing still waiting in the queue (same partition) was ahead of a claimed row and
        already due when it was claimed."""
        if not claimed:
            return
        assert self.app is not None
        rows = {r.workflow_id: r for r in load_history(self.app, queue)}
        waiting = [r for r in rows.values() if r.status == "ENQUEUED"]
        for wid in claimed:
            c: HistoryRow = rows[wid]
            assert c.started_at is not None
            for a in waiting:
                if a.partition_key != c.partition_key or (a.priority, a.seq) > (c.priority, c.seq):
                    continue
                if a.not_before is None or a.not_before <= c.started_at:
                    raise AssertionError(
                        f"queue {queue.name!r}: claimed {wid} (priority {c.priority}, seq "
                        f"{c.seq}) at {c.started_at} but {a.workflow_id} (priority "
                        f"{a.priority}, seq {a.seq}) was due and is still waiting"
                    )


@pytest.mark.slow
def test_flow_control_state_machine(database_url: str) -> None:
    FlowMachine.url = database_url
    run_state_machine_as_test(
        FlowMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
