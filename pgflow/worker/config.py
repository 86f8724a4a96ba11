"""What one worker process serves and how: threads, queues, burst, drain and timeouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..queues import Queue


@dataclass
class WorkerConfig:
    threads: int
    queues: list[Queue]
    burst: bool = False
    max_jobs: int = 0
    grace: float = 30.0
    poll_interval: float = 1.0
    # Seconds a forked worker process may stay silent before its supervisor replaces it.
    child_timeout: float = 60.0
    # --burst: wait for delayed work to come due (else say what is left, and exit).
    burst_wait_delayed: bool = False
    # In the caller's own process (pgflow.testing.drain): no supervisor to watch, never
    # os._exit, and executors of this pid other than ours are alive (the app's own).
    in_process: bool = False
