"""Durable sleep (and, with the messages issue, send/recv and events)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from . import context, serialization
from .errors import PgflowError
from .steps import check_deadline, record_checkpoint, replay


def sleep(seconds: float) -> None:
    """Sleep durably: the wake-up time is checkpointed, so a workflow recovered after a crash
    sleeps only what is left. Outside a workflow this is ``time.sleep``."""
    ctx = context.current()
    if ctx is None or ctx.in_step:
        time.sleep(seconds)
        return
    step_id = ctx.take_step_id()
    done, wake_at = replay(ctx, step_id, "pgflow.sleep")
    if not done:
        wake_at = time.time() + max(0.0, float(seconds))
        record_checkpoint(ctx, step_id, "pgflow.sleep",
                          output=serialization.JSON.dumps(wake_at),
                          started_at=datetime.now(timezone.utc))
    while True:
        left = float(wake_at) - time.time()
        if left <= 0:
            return
        remaining = ctx.seconds_left()
        if remaining is not None and remaining < left:
            time.sleep(max(0.0, remaining))
            check_deadline(ctx)
        time.sleep(min(left, 1.0))


def _not_yet(name: str) -> Any:
    def fn(*args: Any, **kwargs: Any) -> Any:
        raise PgflowError(f"pgflow.{name} is not available in this version yet")
    fn.__name__ = name
    return fn


send = _not_yet("send")
recv = _not_yet("recv")
set_event = _not_yet("set_event")
get_event = _not_yet("get_event")
