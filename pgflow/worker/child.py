"""The first moments of a forked worker process: its own signal handlers, the task module's
current code, then its ``WorkerProcess``. The supervisor decides for Ctrl-C and SIGHUP; a
SIGTERM from it is the graceful stop."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import tracing
from .config import WorkerConfig
from .process import WorkerProcess

if TYPE_CHECKING:
    from ..app import App
    from .liveness import Liveness


def child_main(
    load: Callable[[], tuple[App, WorkerConfig]],
    executor_id: str,
    liveness: Liveness,
    *,
    report_stranded: bool,
) -> int:
    """Run one worker process to its end; its exit code."""
    stop_requested = False
    worker: WorkerProcess | None = None

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        if worker is not None:
            worker.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides for Ctrl-C
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # and for SIGHUP (a terminal's hangup)
    # A child killed for silence (SIGABRT) first prints where each thread was stuck.
    faulthandler.enable(all_threads=True)
    app, config = load()
    worker = WorkerProcess(
        app, config, executor_id, report_stranded=report_stranded, liveness=liveness
    )
    if stop_requested:  # SIGTERM while importing: stop before claiming anything
        worker.request_stop()
    try:
        return worker.run()
    finally:
        # tracing: the supervisor ends this process with os._exit, which skips the SDK's exit
        # hook; spans still buffered are exported first
        with contextlib.suppress(BaseException):
            tracing.flush(2.0)
