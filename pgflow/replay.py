"""The replay protocol: every durable call of a run takes the next step number, and a number
already recorded must be recorded under the same name.

A run numbers its steps, transaction steps, children started or enqueued, messages, events
and sleeps from 1, in the order the body makes them. On recovery the body runs again from the
top, so a call whose number is recorded returns what was recorded instead of running; a
recorded name that differs means the code changed shape, and :class:`NonDeterminism` (raised
here and nowhere else) stops the run before it records anything more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import context, serialization
from .context import RecordedStep
from .errors import NonDeterminism

if TYPE_CHECKING:
    from .context import WorkflowContext
    from .db.pool import Database


def recorded(
    ctx: WorkflowContext, step_id: int, name: str, doing: str = "calls"
) -> RecordedStep | None:
    """The checkpoint of step ``step_id``, None when there is none; NonDeterminism when it
    was recorded under another name than ``name`` (``doing``: what the code now does there,
    e.g. "calls", "starts workflow")."""
    rec = ctx.recorded.get(step_id)
    if rec is not None and rec.name != name:
        raise NonDeterminism(
            f"workflow {ctx.workflow_id} ({ctx.name}) recorded step {step_id} as {rec.name!r} "
            f"but the code now {doing} {name!r} there; the workflow's code changed while it "
            "was running: run it on the version that started it, or fork it"
        )
    return rec


def replay(ctx: WorkflowContext, step_id: int, name: str) -> tuple[bool, Any]:
    """``(True, output)`` when step ``step_id`` is recorded (raising its recorded error);
    ``(False, None)`` when it must run. Raises NonDeterminism on a different recorded name."""
    rec = recorded(ctx, step_id, name)
    if rec is None:
        return False, None
    if rec.error is not None:
        raise serialization.loads_error(rec.error)
    return True, serialization.loads_value(ctx.rt.serializer, ctx.serializer_name, rec.output)


def child_step(
    name: str, doing: str
) -> tuple[WorkflowContext | None, int | None, RecordedStep | None]:
    """For a workflow started or enqueued (``doing``) as ``name``: the parent it is a child of
    (None outside a workflow, or from inside a step, where it is not checkpointed), the step
    number it takes in that parent, and that step's checkpoint (checked by name)."""
    parent = context.current()
    if parent is None or parent.in_step:
        return None, None, None
    step_id = parent.take_step_id()
    return parent, step_id, recorded(parent, step_id, name, doing)


def load_recorded(db: Database, workflow_id: str) -> dict[int, RecordedStep]:
    """A workflow's checkpoints by step number (read once at the start of a replay)."""
    rows = db.retrying(lambda: db.fetchall("list_steps", {"workflow_id": workflow_id}))
    return {
        r["step_id"]: RecordedStep(r["name"], r["output"], r["error"], r["child_workflow_id"])
        for r in rows
    }
