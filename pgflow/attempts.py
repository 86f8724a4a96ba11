"""Time-limited step attempts: a step's body past its ``time_limit`` is abandoned, not killed.

A thread cannot be killed in Python, so an attempt of a step that has a ``time_limit`` runs on
a helper thread (with a copy of the caller's context variables) while the workflow's thread
waits for it. Past the limit the workflow's thread raises :class:`StepTimeLimitExceeded`, an
ordinary exception: the step's retries apply and the workflow may catch it. The body's thread
is left running (a daemon) and its result, when it comes, is ignored; it is kept in
:class:`AbandonedBodies` so that a worker process can replace itself when abandoned bodies
pile up or keep running long after they were abandoned (``worker.overruns.OverrunWatch``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from . import context
from .errors import StepTimeLimitExceeded

log = structlog.get_logger("pgflow")

# A worker process replaces itself when an abandoned body is still running this many times its
# step's time_limit after it was abandoned, and never sooner than ABANDONED_GRACE_MIN seconds.
ABANDONED_GRACE_FACTOR = 2.0
ABANDONED_GRACE_MIN = 10.0


def abandoned_grace(time_limit: float) -> float:
    """Seconds an abandoned body may go on running before its worker process is replaced."""
    return max(ABANDONED_GRACE_MIN, ABANDONED_GRACE_FACTOR * time_limit)


@dataclass(frozen=True)
class AbandonedBody:
    """The thread of a step attempt that ran past its time limit, still running."""

    step: str
    workflow_id: str | None
    time_limit: float
    abandoned_at: float  # time.monotonic()
    thread: threading.Thread

    def overdue(self, now: float) -> bool:
        """Whether it has run past its grace (``now``: time.monotonic())."""
        return now > self.abandoned_at + abandoned_grace(self.time_limit)


class AbandonedBodies:
    """This process's abandoned step bodies (one per App, shared by its threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[AbandonedBody] = []

    def add(self, body: AbandonedBody) -> None:
        with self._lock:
            self._bodies.append(body)

    def running(self) -> list[AbandonedBody]:
        """The abandoned bodies still running (those that ended are forgotten)."""
        with self._lock:
            self._bodies = [b for b in self._bodies if b.thread.is_alive()]
            return list(self._bodies)


def time_limit_exceeded(step: str, time_limit: float, what: str) -> StepTimeLimitExceeded:
    """The error of an attempt of ``step`` that ran past its ``time_limit``."""
    return StepTimeLimitExceeded(
        f"step {step!r} ran past its time_limit of {time_limit:g} s; {what} (its retries "
        "apply; raise the time_limit if the step needs longer)"
    )


def run_attempt(
    fn: Callable[[], Any], time_limit: float, step: str, abandoned: AbandonedBodies
) -> Any:
    """Call ``fn`` on a helper thread and return its result (or raise its exception); past
    ``time_limit`` seconds raise StepTimeLimitExceeded here and leave ``fn`` running."""
    wctx = context.current()
    workflow_id = wctx.workflow_id if wctx is not None else None
    ran = contextvars.copy_context()
    outcome: list[Any] = []  # [True, value] or [False, exception]
    done = threading.Event()

    def body() -> Any:
        if wctx is not None:
            # The body's own copy, always "in a step": once abandoned, the workflow goes on
            # (and leaves its step), while the body's pgflow calls must stay plain calls that
            # never take a step number or write a checkpoint.
            context.enter(dataclasses.replace(wctx, in_step=True))
        return fn()

    def target() -> None:
        try:
            outcome.extend((True, ran.run(body)))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.extend((False, exc))
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"pgflow-step:{step}", daemon=True)
    thread.start()
    if not done.wait(time_limit):
        abandoned.add(AbandonedBody(step, workflow_id, time_limit, time.monotonic(), thread))
        log.warning(
            "step_time_limit",
            step=step,
            workflow_id=workflow_id,
            time_limit_s=time_limit,
            action="attempt abandoned; its body runs on in the background",
        )
        raise time_limit_exceeded(step, time_limit, "the attempt was abandoned")
    ok, value = outcome
    outcome.clear()
    if ok:
        return value
    try:
        raise value
    finally:
        del value  # no cycle through the traceback's frame
