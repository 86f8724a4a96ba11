"""Messages between workflows, events a workflow publishes, and durable sleep.

Inside a workflow each of ``send``, ``recv``, ``set_event``, ``get_event`` and ``sleep`` is a
checkpointed step: on replay it returns what it returned the first time. ``send`` and
``set_event`` write their row and their checkpoint in one transaction (exactly once); ``recv``
deletes the message it takes in the transaction that checkpoints it, so a message is delivered
exactly once however the process dies. Waiting uses LISTEN/NOTIFY (:mod:`pgflow.db.notify`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import psycopg

from . import context, serialization
from .checkpoints import (
    NOT_YET,
    check_deadline,
    ensure_owner,
    in_checkpointed_transaction,
    record_checkpoint,
)
from .db.notify import event_channel, message_channel
from .errors import FencedOut, PgflowError, UnknownWorkflow, WorkflowParked
from .limits import validate_name
from .replay import replay

if TYPE_CHECKING:
    from .context import WorkflowContext
    from .db.notify import Notifications
    from .db.pool import Database

SEND, RECV, SET_EVENT, GET_EVENT, SLEEP = (
    "pgflow.send",
    "pgflow.recv",
    "pgflow.set_event",
    "pgflow.get_event",
    "pgflow.sleep",
)

# -- outside a workflow (App and Client call these) --------------------------------------------


def send_params(
    db: Database,
    serializer: serialization.Serializer,
    destination_id: str,
    message: Any,
    topic: str | None,
    max_bytes: int,
) -> dict[str, Any]:
    """The parameters of ``send_message``: validated ids, the message serialized."""
    validate_name("destination workflow id", destination_id, limit=1000)
    return {
        "destination_id": destination_id,
        "topic": _topic(topic),
        "serializer": serializer.name,
        "channel": message_channel(db.schema),
        "message": serialization.dumps_value(
            serializer, message, max_bytes=max_bytes, what=f"message to workflow {destination_id!r}"
        ),
    }


def send_message(
    db: Database,
    serializer: serialization.Serializer,
    destination_id: str,
    message: Any,
    topic: str | None = None,
    *,
    max_bytes: int,
) -> None:
    """Send from outside a workflow (``app.send`` / ``Client.send``). Not deduplicated: a
    caller that retries may deliver twice; send from a workflow for exactly once. Raises
    UnknownWorkflow when no workflow has the destination id."""
    params = send_params(db, serializer, destination_id, message, topic, max_bytes)
    if db.fetchone("send_message", params) is None:
        raise unknown_destination(destination_id)


def unknown_destination(destination_id: str) -> UnknownWorkflow:
    return UnknownWorkflow(
        f"no workflow has id {destination_id!r}, so nothing can receive a "
        "message sent to it; start the workflow first"
    )


def read_event(
    db: Database,
    notes: Notifications,
    serializer: serialization.Serializer,
    workflow_id: str,
    key: str,
    timeout: float,
) -> Any:
    """The latest value ``workflow_id`` published for ``key``, waiting up to ``timeout``
    seconds for one to appear; None when none did."""
    end = time.monotonic() + max(0.0, float(timeout))
    with notes.watch(event_channel(db.schema), workflow_id) as woke:
        while True:
            woke.clear()
            row = db.fetchone("get_event", {"workflow_id": workflow_id, "key": key})
            if row is not None:
                return serialization.loads_value(serializer, row["serializer"], row["value"])
            left = end - time.monotonic()
            if left <= 0:
                return None
            woke.wait(min(left, notes.recheck_after()))


# -- inside a workflow ------------------------------------------------------------------------


def _topic(topic: str | None) -> str:
    return "" if topic is None else validate_name("topic", topic)


def _workflow(what: str, outside: str) -> WorkflowContext:
    ctx = context.current()
    if ctx is None:
        raise PgflowError(f"pgflow.{what} was called outside a workflow; {outside}")
    if ctx.in_step:
        raise PgflowError(
            f"pgflow.{what} was called inside a step; call it from the "
            "workflow's own body so it is checkpointed"
        )
    return ctx


def _as_checkpoint(ctx: WorkflowContext, serializer_name: str, text: str) -> str:
    """A stored value in the form the workflow's checkpoints are read back with."""
    if serializer_name == ctx.serializer_name:
        return text
    rt = ctx.rt
    value = serialization.loads_value(rt.serializer, serializer_name, text)
    return serialization.dumps_value(
        serialization.serializer_for_row(rt.serializer, ctx.serializer_name),
        value,
        max_bytes=rt.settings.max_payload_bytes,
        what="a received value",
    )


def send(destination_id: str, message: Any, topic: str | None = None) -> None:
    """Send ``message`` to workflow ``destination_id`` (received by its ``pgflow.recv``).

    In a workflow this is a step: sent once, however often the workflow is recovered.
    Outside a workflow use ``app.send`` or ``Client.send``. Raises UnknownWorkflow when no
    workflow has the id ``destination_id`` (in a workflow, that outcome is checkpointed too).
    """
    ctx = _workflow("send", "use app.send(...) or pgflow.Client(url).send(...)")
    step_id = ctx.take_step_id()
    done, _ = replay(ctx, step_id, SEND)
    if done:
        return
    check_deadline(ctx)
    rt = ctx.rt
    params = send_params(
        rt.db, rt.serializer, destination_id, message, topic, rt.settings.max_payload_bytes
    )

    def body(conn: psycopg.Connection[Any]) -> tuple[str | None, Any] | None:
        if rt.db.execute(conn, "send_message", params).fetchone() is None:
            return None  # no such destination: nothing written; recorded as an error below
        return None, None

    if in_checkpointed_transaction(ctx, step_id, SEND, body) is NOT_YET:
        # Checkpointed as the step's error, so a replay raises it again without looking.
        error = unknown_destination(destination_id)
        record_checkpoint(ctx, step_id, SEND, error=serialization.dumps_error(error))
        raise error


def recv(topic: str | None = None, timeout: float = 60.0) -> Any:
    """The oldest message sent to this workflow on ``topic``, waiting up to ``timeout``
    seconds; None on timeout. Each message is delivered exactly once, and a recovered
    workflow gets the same message (or the same None) again."""
    ctx = _workflow("recv", "only a workflow receives messages")
    step_id = ctx.take_step_id()
    done, value = replay(ctx, step_id, RECV)
    if done:
        return value
    check_deadline(ctx)
    rt = ctx.rt
    key = {"destination_id": ctx.workflow_id, "topic": _topic(topic)}
    end = time.monotonic() + max(0.0, float(timeout))

    waiting = False  # recorded on the row for `pgflow explain`; cleared by the take

    def take(final: bool) -> Callable[[psycopg.Connection[Any]], tuple[str | None, Any] | None]:
        def body(conn: psycopg.Connection[Any]) -> tuple[str | None, Any] | None:
            row = rt.db.execute(conn, "consume_message", key).fetchone()
            if row is None and not final:
                return None
            if waiting:
                rt.db.execute(conn, "clear_recv_wait", {"workflow_id": ctx.workflow_id})
            if row is None:
                return None, None
            value = serialization.loads_value(rt.serializer, row["serializer"], row["message"])
            return _as_checkpoint(ctx, row["serializer"], row["message"]), value

        return body

    notes = rt.notifications
    with notes.watch(message_channel(rt.db.schema), ctx.workflow_id) as woke:
        while True:
            woke.clear()
            final = time.monotonic() >= end
            got = in_checkpointed_transaction(ctx, step_id, RECV, take(final))
            if got is not NOT_YET:
                return got
            if not waiting:
                waiting = True
                _record_wait(ctx, step_id, key["topic"], end - time.monotonic())
            _wait(ctx, woke, end - time.monotonic(), notes.recheck_after())


def _record_wait(ctx: WorkflowContext, step_id: int, topic: str, seconds: float) -> None:
    """Put on the row that this recv waits for ``topic`` (for ``pgflow explain``)."""
    db = ctx.rt.db
    params: dict[str, Any] = {"workflow_id": ctx.workflow_id, "fence": ctx.fence}
    params.update(step_id=step_id, topic=topic, timeout_s=max(0.0, seconds))
    db.retrying(lambda: db.run("record_recv_wait", params))


def _wait(ctx: WorkflowContext, woke: Any, left: float, recheck: float) -> None:
    """Wait for a NOTIFY, ``left`` seconds or the deadline. Each wait first checks that the
    workflow is still ours: a cancel NOTIFYs it, and one that came before the watch began is
    seen here."""
    check_deadline(ctx)
    ensure_owner(ctx)
    remaining = ctx.seconds_left()
    limit = min(max(0.0, left), recheck, remaining if remaining is not None else recheck)
    woke.wait(max(0.0, limit))


def set_event(key: str, value: Any) -> None:
    """Publish ``value`` as this workflow's latest value for ``key`` (read with
    ``get_event``); a checkpointed step, written once."""
    ctx = _workflow("set_event", "only a workflow publishes events")
    step_id = ctx.take_step_id()
    done, _ = replay(ctx, step_id, SET_EVENT)
    if done:
        return
    check_deadline(ctx)
    rt = ctx.rt
    params = {
        "workflow_id": ctx.workflow_id,
        "step_id": step_id,
        "key": validate_name("event key", key),
        "serializer": rt.serializer.name,
        "channel": event_channel(rt.db.schema),
        "value": serialization.dumps_value(
            rt.serializer, value, max_bytes=rt.settings.max_payload_bytes, what=f"event {key!r}"
        ),
    }

    def body(conn: psycopg.Connection[Any]) -> tuple[str | None, Any]:
        rt.db.execute(conn, "set_event", params)
        return None, None

    in_checkpointed_transaction(ctx, step_id, SET_EVENT, body)


def get_event(workflow_id: str, key: str, timeout: float = 60.0) -> Any:
    """The latest value workflow ``workflow_id`` published for ``key``, waiting up to
    ``timeout`` seconds; None when there is none. In a workflow the answer is checkpointed.
    Outside a workflow use ``app.get_event`` or ``Client.get_event``."""
    ctx = _workflow("get_event", "use app.get_event(...) or pgflow.Client(url).get_event(...)")
    step_id = ctx.take_step_id()
    done, value = replay(ctx, step_id, GET_EVENT)
    if done:
        return value
    check_deadline(ctx)
    rt = ctx.rt
    started = datetime.now(timezone.utc)
    remaining = ctx.seconds_left()
    wait = timeout if remaining is None else max(0.0, min(timeout, remaining))
    value = read_event(rt.db, rt.notifications, rt.serializer, workflow_id, key, wait)
    check_deadline(ctx)
    output = serialization.dumps_value(
        serialization.serializer_for_row(rt.serializer, ctx.serializer_name),
        value,
        max_bytes=rt.settings.max_payload_bytes,
        what=f"event {key!r}",
    )
    record_checkpoint(ctx, step_id, GET_EVENT, output=output, started_at=started)
    return value


def sleep(seconds: float) -> None:
    """Sleep durably: the wake-up time is checkpointed, so a workflow recovered after a crash
    sleeps only what is left. Outside a workflow this is ``time.sleep``.

    A workflow a worker claimed from a queue, sleeping longer than the ``sleep_threshold``
    setting (30 s), goes back to its queue until it wakes: its thread serves other work and
    the queue's concurrency does not count it meanwhile.
    """
    ctx = context.current()
    if ctx is None or ctx.in_step:
        time.sleep(seconds)
        return
    step_id = ctx.take_step_id()
    done, wake_at = replay(ctx, step_id, SLEEP)
    # The database's clock, not this host's: a workflow recovered on another machine (whose
    # clock may differ) wakes when it should.
    db = ctx.rt.db
    row = db.retrying(lambda: db.fetchone("clock_now"))
    now = row["now"].timestamp() if row is not None else time.time()
    if not done:
        wake_at = now + max(0.0, float(seconds))
        # Encoded as the workflow's checkpoints are read back (a pickle row reads pickle).
        encoder = serialization.serializer_for_row(ctx.rt.serializer, ctx.serializer_name)
        record_checkpoint(
            ctx,
            step_id,
            SLEEP,
            output=encoder.dumps(wake_at),
            started_at=datetime.now(timezone.utc),
        )
    left = float(wake_at) - now
    if left <= 0:
        return
    if ctx.queue_name is not None and left > ctx.rt.settings.sleep_threshold:
        _park(ctx, left)
    end = time.monotonic() + left
    notes = ctx.rt.notifications
    with notes.watch(message_channel(ctx.rt.db.schema), ctx.workflow_id) as woke:
        while (left := end - time.monotonic()) > 0:
            woke.clear()
            _wait(ctx, woke, left, notes.recheck_after())


def _park(ctx: WorkflowContext, seconds: float) -> None:
    """Hand the workflow back to its queue until it wakes (or its deadline, if sooner)."""
    remaining = ctx.seconds_left()
    if remaining is not None:
        seconds = max(0.0, min(seconds, remaining))
    row = ctx.rt.db.retrying(
        lambda: ctx.rt.db.fetchone(
            "park_workflow",
            {"workflow_id": ctx.workflow_id, "fence": ctx.fence, "seconds": seconds},
        )
    )
    if row is None:
        ensure_owner(ctx)  # raises WorkflowCancelled when cancelled
        raise FencedOut(ctx.workflow_id)
    raise WorkflowParked(ctx.workflow_id, seconds)
