"""Starting a workflow in this process, durably: its row is inserted PENDING under this
process's executor with a fresh fence, then it runs inline or on a thread. Inside a workflow
the new one is a child, recorded as a step of its parent.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import metrics, serialization
from .checkpoints import check_deadline
from .enqueue import check_same_function, new_workflow_id, record_child, workflow_row
from .execution import run_claimed
from .handles import WorkflowHandle
from .records import Claimed
from .replay import child_step

if TYPE_CHECKING:
    from collections.abc import Callable

    from .context import WorkflowContext
    from .registry import WorkflowDef
    from .runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")


def start(
    rt: Runtime,
    wf: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    workflow_id: str | None = None,
    timeout: float | None = None,
    run: str = "thread",
) -> tuple[WorkflowHandle[Any], Any]:
    """Start ``wf`` durably. ``run`` is "inline" (this thread; the result is returned) or
    "thread" (a new thread). Inside a workflow the new one is its child, recorded as a step.

    Returns the handle and, for "inline", the result.
    """
    parent, step_id, rec = child_step(wf.name, "starts workflow")
    if parent is not None:
        if rec is not None:
            workflow_id = rec.child_workflow_id or workflow_id
        check_deadline(parent)
        if workflow_id is None:
            workflow_id = f"{parent.workflow_id}-{step_id}"
    if workflow_id is None:
        workflow_id = new_workflow_id()
    inputs = serialization.dumps_inputs(
        rt.serializer,
        args,
        kwargs,
        max_bytes=rt.settings.max_payload_bytes,
        what=f"workflow {wf.name!r}",
    )
    # Read once: the run keeps this owner to its end (the Runtime's may be replaced meanwhile).
    executor = rt.executor
    executor.ensure_registered()
    claimed = _insert_started(
        rt, wf, workflow_id, inputs, timeout, parent, executor_id=executor.executor_id
    )
    if parent is not None and step_id is not None and rec is None:
        record_child(parent, step_id, wf.name, workflow_id)
    if claimed is None:
        claimed = try_adopt(rt, workflow_id, executor.executor_id)
    return _run_started(rt, wf, workflow_id, claimed, args, kwargs, run)


def _insert_started(
    rt: Runtime,
    wf: WorkflowDef,
    workflow_id: str,
    inputs: str,
    timeout: float | None,
    parent: WorkflowContext | None,
    *,
    executor_id: str,
) -> Claimed | None:
    """INSERT the row PENDING under ``executor_id`` with a fresh fence; the claim when this
    insert made it ours, None when the id was taken (by the same function: else
    WorkflowConflict)."""
    fence = uuid.uuid4()
    params = workflow_row(
        rt,
        wf.name,
        app_version=rt.app_version,
        max_recovery_attempts=wf.max_recovery_attempts,
        timeout=timeout if timeout is not None else wf.timeout,
        workflow_id=workflow_id,
        parent_workflow_id=parent.workflow_id if parent else None,
        executor_id=executor_id,
        inputs=inputs,
        # A child's deadline is the sooner of its own timeout and its parent's deadline.
        deadline=parent.deadline if parent is not None else None,
        fence=fence,
    )
    tries = 0

    def insert() -> dict[str, Any] | None:
        nonlocal tries
        tries += 1
        found = rt.db.fetchone("insert_workflow", params)
        if found is None and tries > 1:
            # A retry after a lost reply: the first INSERT may have landed, as ours (our fence
            # is on it only if nobody has claimed or adopted it since).
            mine = rt.db.fetchone("get_workflow", {"workflow_id": workflow_id})
            if mine is not None and mine["status"] == "PENDING" and mine["fence"] == fence:
                return {"attempt": 1, "deadline": mine["deadline"], "db_now": None, "owned": True}
        return found

    row = rt.db.retrying(insert)
    if row is None:
        check_same_function(rt.db, workflow_id, wf.name)
    if row is None or not row["owned"]:
        return None
    return Claimed(
        workflow_id=workflow_id,
        name=wf.name,
        serializer_name=rt.serializer.name,
        inputs=inputs,
        attempt=row["attempt"],
        fence=fence,
        executor_id=executor_id,
        deadline=row["deadline"],
        db_now=row["db_now"],
        trace_context=params["trace_context"],
    )


def _run_started(
    rt: Runtime,
    wf: WorkflowDef,
    workflow_id: str,
    claimed: Claimed | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run: str,
) -> tuple[WorkflowHandle[Any], Any]:
    handle: WorkflowHandle[Any] = WorkflowHandle(rt, workflow_id)
    if claimed is None:
        # Someone else runs it (or it is done): the handle waits on the recorded outcome.
        if run == "inline":
            return handle, handle.result()
        return handle, None
    if run == "inline":
        return handle, run_claimed(rt, claimed, wf, args, kwargs, reraise=True)
    rt.spawn(lambda: run_claimed(rt, claimed, wf, args, kwargs))
    return handle, None


def try_adopt(rt: Runtime, workflow_id: str, executor_id: str) -> Claimed | None:
    """Take over an ownerless PENDING workflow of this version (after its owner died), as
    ``executor_id`` (a registered executor of this process)."""
    row = rt.db.retrying(
        lambda: rt.db.fetchone(
            "adopt_workflow",
            {
                "workflow_id": workflow_id,
                "executor_id": executor_id,
                "app_version": rt.app_version,
            },
        )
    )
    if row is None:
        return None
    metrics.adopted(row.get("queue_name"), row["name"])
    return Claimed.from_row(row, executor_id)


class StartOptions:
    """``app.options(workflow_id=..., timeout=...)``: start or call with an id or deadline."""

    def __init__(self, rt: Runtime, workflow_id: str | None, timeout: float | None) -> None:
        self._rt, self._workflow_id, self._timeout = rt, workflow_id, timeout

    @overload
    def start(self, fn: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...
    @overload
    def start(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    def start(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start ``fn(*args, **kwargs)`` now on a thread of this process; returns its handle."""
        handle, _ = start(
            self._rt,
            self._rt.registry.resolve(fn),
            args,
            kwargs,
            workflow_id=self._workflow_id,
            timeout=self._timeout,
        )
        return handle

    @overload
    def call(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...
    @overload
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def call(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` durably in this thread and return its result."""
        _, result = start(
            self._rt,
            self._rt.registry.resolve(fn),
            args,
            kwargs,
            workflow_id=self._workflow_id,
            timeout=self._timeout,
            run="inline",
        )
        return result
