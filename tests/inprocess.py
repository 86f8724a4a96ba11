"""A worker process's claim loop run on a thread of the test process (``in_process`` mode),
for tests that need queued work to run without forking a ``pgflow worker``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pgflow
from pgflow.executor import new_executor_id
from pgflow.worker.config import WorkerConfig
from pgflow.worker.process import WorkerProcess


@contextlib.contextmanager
def running_worker(
    app: pgflow.App, *queues: str, threads: int = 4, poll_interval: float = 0.1
) -> Iterator[WorkerProcess]:
    """Serve ``queues`` (default: all of the app's) until the block ends; the block starts
    once the worker is registered."""
    names = queues or tuple(app.queues)
    config = WorkerConfig(
        threads=threads,
        queues=[app.queues[n] for n in names],
        grace=5.0,
        poll_interval=poll_interval,
        in_process=True,
    )
    # In-process, the worker is an executor of its own; the app keeps its own (which
    # App.shutdown stops).
    worker = WorkerProcess(app, config, new_executor_id())
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        # Registered (its executor row names its queues) and declared its queues: ready.
        wait_for(lambda: hasattr(worker, "pool") or not thread.is_alive(), what="the worker")
        yield worker
    finally:
        worker.request_stop()
        thread.join(15)


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
