"""Run a worker in this process until its queues are empty, moving the clock over waits."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from ..executor import new_executor_id
from ..queues import Queue
from ..worker.config import WorkerConfig
from ..worker.process import EXIT_OK, WorkerProcess
from .clock import Clock

if TYPE_CHECKING:
    from ..app import App

log = structlog.get_logger("pgflow")

# How far past the moment work becomes due the clock is moved (the database keeps
# microseconds; a millisecond keeps float rounding on the right side).
MARGIN = 0.001


@dataclass(frozen=True)
class DrainSummary:
    """What a :func:`drain` did: workflows ended SUCCESS (``done``) or otherwise (``failed``:
    ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED) since it began, rows still ENQUEUED or
    PENDING (``left``), and seconds it moved the clock (``advanced``)."""

    done: int
    failed: int
    left: int
    advanced: float


def drain(
    app: App,
    queues: Iterable[Queue | str] | None = None,
    *,
    threads: int = 4,
    timeout: float = 60.0,
    clock: Clock | None = None,
) -> DrainSummary:
    """Run a pgflow worker (the real claim loop, ``threads`` threads) in this process until
    ``queues`` (default: all the app declares) hold nothing ENQUEUED or PENDING it could run.

    With a ``clock``, waiting is skipped: when all that is left waits for a delay, a rate
    window, or a dead owner's heartbeat to expire, the clock moves forward to that moment
    instead. Without one the worker waits in real time.

    Raises TimeoutError after ``timeout`` real seconds (what is left stays queued) and
    AssertionError when the worker had to stop (it was declared dead, or a workflow passed its
    time limit).

    >>> summary = drain(app, clock=Clock(app))
    >>> assert summary.failed == 0
    """
    names = [q if isinstance(q, str) else q.name for q in (queues or list(app.queues))]
    served = [app.queues[n] for n in names]
    config = WorkerConfig(
        threads=threads, queues=served, burst=True, grace=5.0, poll_interval=0.02, in_process=True
    )
    since = Clock(app).now()
    skipper = None if clock is None else _ClockSkipper(app, served, clock)
    worker = WorkerProcess(app, config, new_executor_id(), on_idle=skipper)
    if skipper is not None:
        skipper.worker = worker
    code, timed_out = _run_with_timeout(worker, timeout)
    row = app.db.fetchone("queue_progress", {"queues": names, "since": since})
    assert row is not None
    summary = DrainSummary(
        done=row["done"],
        failed=row["failed"],
        left=row["left_"],
        advanced=0.0 if skipper is None else skipper.moved,
    )
    if timed_out.is_set():
        raise TimeoutError(
            f"drain gave up after {timeout:g}s with {summary.left} workflow(s) still ENQUEUED "
            f"or PENDING on {', '.join(names)} ({summary.done} done, {summary.failed} failed); "
            "are their workflows registered in this app, of this app version, and not waiting "
            "on something outside the queue?"
        )
    if code != EXIT_OK:
        raise AssertionError(
            f"the drain's worker stopped early (exit code {code}); see the log for why"
        )
    log.debug("drain_finished", done=summary.done, failed=summary.failed, advanced=summary.advanced)
    return summary


class _ClockSkipper:
    """The drain's worker's idle hook: move the clock to when the work left becomes
    startable (True), or say that time would change nothing (False: the burst ends)."""

    def __init__(self, app: App, queues: list[Queue], clock: Clock) -> None:
        self.app = app
        self.queues = queues
        self.clock = clock
        self.worker: WorkerProcess | None = None
        self.moved = 0.0  # seconds the clock was moved

    def __call__(self) -> bool:
        assert self.worker is not None
        step = _next_wait(self.app, self.queues)
        if step is None:
            return False
        if step > 0:
            self.clock.advance(step)
            self.moved += step
            # Our own heartbeat at the new time, before anyone looks for dead executors.
            self.app.db.fetchone("heartbeat", {"executor_id": self.worker.executor_id})
        return True


def _run_with_timeout(worker: WorkerProcess, timeout: float) -> tuple[int, threading.Event]:
    """Run the worker until its burst ends, stopping it after ``timeout`` seconds: its exit
    code, and an event set when the timeout stopped it."""
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        worker.request_stop()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        # The worker is an executor of its own beside the App's (which keeps running what it
        # started, and lives on after the drain).
        code = worker.run()
    finally:
        timer.cancel()
    return code, timed_out


def _next_wait(app: App, queues: list[Queue]) -> float | None:
    """Seconds to move the clock for queued work to become startable; 0: recover now without
    moving it (ownerless work to adopt, or already due); None: nothing time would change."""
    row = app.db.fetchone(
        "testing_next_start",
        {
            "queues": [q.name for q in queues],
            "per_s": [q.rate_limit.per if q.rate_limit else None for q in queues],
            "app_version": app.app_version,
        },
    )
    assert row is not None
    now: datetime = row["now"]
    if row["orphans"]:
        return 0.0
    due: list[datetime] = [
        t for t in (row["next_not_before"], row["next_window_end"]) if t is not None
    ]
    if due:
        return max(0.0, (min(due) - now).total_seconds()) + MARGIN
    if row["owned"]:
        # Only rows held by executors that are not running them here: let their heartbeats
        # expire, as when their machine stops.
        return float(app.settings.heartbeat_timeout) + MARGIN
    return None
