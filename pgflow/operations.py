"""The methods App and Client share: reading, messaging and managing workflows through one
Runtime, with no application code needed. Each facade adds its own (App: decorators,
starting, launching; Client: enqueueing by name, versions, queues)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import activity, bulk, management, messages, retention
from . import explain as explaining
from .db.notify import message_channel
from .handles import WorkflowHandle

if TYPE_CHECKING:
    from .completions import Completions
    from .db.notify import Notifications
    from .db.pool import Database
    from .records import Status, StepRecord, WorkflowStatus
    from .runtime import Runtime
    from .serialization import Serializer
    from .settings import Settings


class Operations:
    """Reading, messaging and managing workflows: the methods ``App`` and ``Client`` share,
    each through its own Runtime (``self.runtime``)."""

    runtime: Runtime

    @property
    def db(self) -> Database:
        """This process's pool (built on first use)."""
        return self.runtime.db

    @property
    def serializer(self) -> Serializer:
        """The serializer object of new rows (each row names its own)."""
        return self.runtime.serializer

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        # The worker's flags and the testing helpers re-point an App before it connects.
        self.runtime.settings = settings

    @property
    def completions(self) -> Completions:
        return self.runtime.completions

    @property
    def notifications(self) -> Notifications:
        """This process's LISTEN session for messages and events (started on first use)."""
        return self.runtime.notifications

    def close_db(self) -> None:
        """Close this process's pool (the supervisor does so before every fork)."""
        self.runtime.close_db()

    def retrieve_status(self, workflow_id: str) -> WorkflowStatus | None:
        """The workflow's record, or None when no workflow has this id."""
        return management.get_status(self.db, self.serializer, workflow_id)

    def list_workflows(
        self,
        *,
        status: str | Status | list[str | Status] | None = None,
        name: str | None = None,
        queue: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        parent_workflow_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[WorkflowStatus]:
        """Workflows matching every filter given, oldest first unless ``newest_first``."""
        return management.list_workflows(
            self.db,
            self.serializer,
            status=status,
            name=name,
            queue=queue,
            created_after=created_after,
            created_before=created_before,
            parent_workflow_id=parent_workflow_id,
            limit=limit,
            offset=offset,
            newest_first=newest_first,
        )

    def list_queued(self, queue: str | None = None, limit: int = 1000) -> list[WorkflowStatus]:
        """ENQUEUED and PENDING workflows of ``queue`` (of every queue when None), in the order
        workers claim them."""
        return management.list_queued(self.db, self.serializer, queue, limit)

    def steps(self, workflow_id: str) -> list[StepRecord]:
        """The recorded steps of a workflow, in order."""
        return management.steps(self.db, self.serializer, workflow_id)

    def cancel(self, workflow_id: str) -> WorkflowStatus:
        """Cancel a workflow and its children: ENQUEUED or PENDING ones become CANCELLED, and a
        running one starts no further step (a waiting recv or sleep wakes at once; a step
        already running completes and keeps its checkpoint). Returns its record."""
        cancelled = management.cancel_tree(self.db, [workflow_id])
        notes = self.runtime.started_notifications()
        if notes is not None:
            # This process's runs need not wait for the NOTIFY to come round.
            for wid in cancelled:
                notes.wake(message_channel(self.db.schema), wid)
        return management.require_status(self.db, self.serializer, workflow_id)

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle on an existing workflow (raises UnknownWorkflow when there is none)."""
        management.require_status(self.db, self.serializer, workflow_id)
        return WorkflowHandle(self.runtime, workflow_id)

    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a workflow now. A CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED one runs
        again from its last completed step: on its queue if it had one, else by a launched
        executor of its version (an App runs it right here when it can). A queued one loses
        its delay and is claimed by the next worker with room. A running or succeeded
        workflow is left as it is. Returns its handle."""
        found = management.resume(self.db, self.serializer, workflow_id)
        self._run_ownerless(workflow_id, found)
        return WorkflowHandle(self.runtime, workflow_id)

    def fork(
        self,
        workflow_id: str,
        from_step: int = 1,
        *,
        new_workflow_id: str | None = None,
        app_version: str | None = None,
    ) -> WorkflowHandle[Any]:
        """A new workflow with the same inputs that reuses the recorded steps before
        ``from_step`` (they do not run again) and runs the rest; on the original's queue, or
        by a launched executor of its version (an App runs it right here when it can).
        Returns the new workflow's handle."""
        new_id = management.fork(
            self.db,
            workflow_id,
            from_step,
            new_workflow_id=new_workflow_id,
            app_version=app_version,
        )
        self._run_ownerless(new_id)
        return WorkflowHandle(self.runtime, new_id)

    def _run_ownerless(self, workflow_id: str, found: WorkflowStatus | None = None) -> None:
        """A resumed or forked workflow (its record ``found``, if read) that no queue will
        hand out: an App runs it here when it can; a Client leaves it to the launched
        executors of its version."""

    def send(self, destination_id: str, message: Any, topic: str | None = None) -> None:
        """Send ``message`` to workflow ``destination_id`` from outside a workflow (inside
        one, ``pgflow.send`` sends exactly once). UnknownWorkflow when there is no such id."""
        messages.send_message(
            self.db,
            self.serializer,
            destination_id,
            message,
            topic,
            max_bytes=self.settings.max_payload_bytes,
        )

    def get_event(self, workflow_id: str, key: str, timeout: float = 60.0) -> Any:
        """The latest value workflow ``workflow_id`` published for ``key`` with
        ``pgflow.set_event``, waiting up to ``timeout`` seconds; None when there is none."""
        return messages.read_event(
            self.db, self.notifications, self.serializer, workflow_id, key, timeout
        )

    def explain(self, workflow_id: str) -> explaining.Explanation:
        """Why workflow ``workflow_id`` is not running, from the database: every reason that
        holds (delayed, its queue's limits full, no live worker of its queue or version,
        sleeping, ahead of it in the queue, its executor's state and step), each a code, a
        sentence and its numbers; for an ended workflow, that it is done.

        >>> print(app.explain("checkout-7").text)
        """
        return explaining.explain(
            self.db, self.serializer, workflow_id, self.settings.heartbeat_timeout
        )

    def workers(self) -> list[activity.WorkerInfo]:
        """Every executor (live ones first, then those whose heartbeat is stale and that no
        live executor reaped yet) with the workflows PENDING under it."""
        return activity.list_workers(self.db, self.settings.heartbeat_timeout)

    def dead_workers(self, limit: int = 100) -> list[activity.DeadExecutor]:
        """Executors that died recently (reaped by a live one, newest first), each with how
        many of its PENDING workflows were handed back; kept for a day, 100 at most.

        >>> [(d.hostname, d.pid, d.released) for d in app.dead_workers()]
        """
        return activity.recent_deaths(self.db, limit)

    # -- many at once (pgflow workflows cancel|resume by filter, pgflow prune) ------------------

    def count_matching(
        self,
        action: bulk.Action = "cancel",
        *,
        status: str | Status | list[str | Status] | None = None,
        queue: str | None = None,
        name: str | None = None,
        older_than: str | float | None = None,
        everything: bool = False,
    ) -> int:
        """How many workflows ``cancel_matching`` (``action="cancel"``) or
        ``resume_matching`` (``"resume"``) would take now, with the same filters."""
        return bulk.count_matching(
            self.db,
            bulk.match(
                action,
                status=status,
                queue=queue,
                name=name,
                older_than=older_than,
                everything=everything,
            ),
        )

    def cancel_matching(
        self,
        *,
        status: str | Status | list[str | Status] | None = None,
        queue: str | None = None,
        name: str | None = None,
        older_than: str | float | None = None,
        everything: bool = False,
        batch: int = bulk.BATCH,
        on_batch: Callable[[bulk.BulkResult], None] | None = None,
    ) -> bulk.BulkResult:
        """Cancel every active workflow matching all the filters given, with its children,
        ``batch`` at a time (each batch a short transaction): ``status`` (ENQUEUED and/or
        PENDING; default both), ``queue``, ``name``, ``older_than`` (created longer ago than
        this duration: ``"1d"``, or seconds). No filter is refused unless ``everything=True``.
        Workflows enqueued after the call began are not touched.

        >>> app.cancel_matching(queue="emails", status="ENQUEUED", older_than="1d").changed
        """
        return bulk.cancel_matching(
            self.db,
            bulk.match(
                "cancel",
                status=status,
                queue=queue,
                name=name,
                older_than=older_than,
                everything=everything,
            ),
            batch=batch,
            on_batch=on_batch,
        )

    def resume_matching(
        self,
        *,
        status: str | Status | list[str | Status] | None = None,
        queue: str | None = None,
        name: str | None = None,
        older_than: str | float | None = None,
        everything: bool = False,
        batch: int = bulk.BATCH,
        on_batch: Callable[[bulk.BulkResult], None] | None = None,
    ) -> bulk.BulkResult:
        """Resume every workflow matching all the filters given, as ``resume`` does one:
        ``status`` CANCELLED, ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED (the default: all
        three) run again from their last completed step; ENQUEUED (only when named) lose
        their delay. Filters and batches as in ``cancel_matching``."""
        return bulk.resume_matching(
            self.db,
            bulk.match(
                "resume",
                status=status,
                queue=queue,
                name=name,
                older_than=older_than,
                everything=everything,
            ),
            batch=batch,
            on_batch=on_batch,
        )

    def count_prunable(
        self, older_than: str | float, status: str | Status | list[str | Status] | None = None
    ) -> int:
        """How many workflows ``prune`` would delete now."""
        return retention.count_prunable(self.db, older_than, status)

    def prune(
        self,
        older_than: str | float,
        status: str | Status | list[str | Status] | None = None,
        *,
        batch: int = retention.BATCH,
        on_batch: Callable[[retention.PruneResult], None] | None = None,
    ) -> retention.PruneResult:
        """Delete workflows that ended more than ``older_than`` ago (``"30d"``, or seconds),
        in ``status`` (default: SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED),
        with their checkpoints, the messages sent to them and their events, ``batch`` at a
        time. A child stays while its parent stays.

        >>> app.prune("30d").workflows
        """
        return retention.prune(self.db, older_than, status, batch=batch, on_batch=on_batch)
