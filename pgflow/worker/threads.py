"""The worker process's helper threads: the workflow threads, and the completer that writes
final statuses in batches."""

from __future__ import annotations

import queue as stdqueue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from .. import execution, outcomes
from ..errors import DatabaseUnavailable, FencedOut, PgflowError
from ..records import Outcome
from ..recovery import release_executors

if TYPE_CHECKING:
    from ..app import App
    from ..context import WorkflowContext
    from ..records import Claimed

log = structlog.get_logger("pgflow")


class Completer:
    """Writes final statuses in batches: everything finished since the last commit goes in the
    next one (one commit for many workflows under load, immediate when idle).

    ``written`` is called once per committed (or failed) batch with the queue names of its
    workflows that hold a queue slot, so the slots are given back under one lock, with one
    wake-up of the claim loop.
    """

    def __init__(self, app: App, written: Callable[[list[str]], None]) -> None:
        self.app = app
        self.written = written
        self.items: stdqueue.SimpleQueue[tuple[Outcome, str | None] | None] = stdqueue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="pgflow-complete", daemon=True)
        self.pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def start(self) -> None:
        self.thread.start()

    def submit(self, outcome: Outcome, slot: str | None = None) -> None:
        """Queue a final write; ``slot``: the queue whose slot it holds until committed."""
        with self._lock:
            self.pending += 1
        self.items.put((outcome, slot))

    def stop(self) -> None:
        self.items.put(None)

    def _run(self) -> None:
        while True:
            first = self.items.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 1000:
                try:
                    item = self.items.get_nowait()
                except stdqueue.Empty:
                    break
                if item is None:
                    self.items.put(None)
                    break
                batch.append(item)
            while True:
                try:
                    outcomes.finish(self.app, [outcome for outcome, _ in batch])
                except DatabaseUnavailable as exc:
                    # Keep trying while the process lives: these rows are PENDING under this
                    # (live) executor, so nobody else would ever finish or recover them.
                    log.warning("completion_write_retrying", error=str(exc), workflows=len(batch))
                    continue
                except PgflowError as exc:
                    log.error("completion_write_failed", error=str(exc), workflows=len(batch))
                break
            slots = [slot for _, slot in batch if slot is not None]
            if slots:
                self.written(slots)
            with self._lock:
                self.pending -= len(batch)
                self._idle.notify_all()

    def flush(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._lock:
            while self.pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


class RunThreads:
    """The workflow threads: a fixed set taking calls from one queue.

    Leaner than ThreadPoolExecutor (no Future, no per-call lock and condition); the calls
    handle their own errors, and nobody waits for their results.
    """

    def __init__(self, n: int) -> None:
        self.calls: stdqueue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            stdqueue.SimpleQueue()
        )
        self.threads = [
            threading.Thread(target=self._serve, name=f"pgflow-run_{i}", daemon=True)
            for i in range(n)
        ]
        for t in self.threads:
            t.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.calls.put((fn, args))

    def _serve(self) -> None:
        while True:
            call = self.calls.get()
            if call is None:
                return
            fn, args = call
            try:
                fn(*args)
            except BaseException as exc:  # keep the thread: _run_one handles its own errors
                log.error("run_thread_error", error=repr(exc))

    def shutdown(self) -> None:
        """Let each thread end after the calls already queued."""
        for _ in self.threads:
            self.calls.put(None)


def execute_claimed(
    app: App,
    claimed: Claimed,
    executor_id: str,
    completer: Completer,
    queue_name: str | None,
    on_start: Callable[[WorkflowContext], None],
) -> bool:
    """Run one claimed workflow on this thread and hand its outcome to ``completer``. True
    when the outcome holds the queue's slot until its final write commits, so the rows PENDING
    under this executor never outnumber ``worker_concurrency``, not only the running threads.
    A run that ends without an outcome goes back: uncharged when pgflow stopped it, charged
    when the workflow crashed its thread."""
    try:
        wf = app.registry.workflow(claimed.name)
        outcome, _, _ = execution.execute(app.runtime, claimed, wf, on_start=on_start)
        if outcome is not None:
            completer.submit(outcome, queue_name)
            return queue_name is not None
    except FencedOut as exc:
        log.warning("workflow_abandoned", workflow_id=claimed.workflow_id, error=str(exc))
    except PgflowError as exc:
        # Still ours but not running any more: hand it back (uncharged), or it would sit
        # PENDING under this live executor, where nobody recovers it.
        log.warning("workflow_abandoned", workflow_id=claimed.workflow_id, error=str(exc))
        try:
            release_executors(app, [executor_id], charge=False, workflow_ids=[claimed.workflow_id])
        except PgflowError as again:
            log.error("release_failed", workflow_id=claimed.workflow_id, error=str(again))
    except BaseException as exc:  # SystemExit etc. in a workflow: a crash
        log.error("workflow_crashed", workflow_id=claimed.workflow_id, error=repr(exc))
        release_executors(app, [executor_id], charge=True, workflow_ids=[claimed.workflow_id])
    return False
