"""Hypothesis strategies for enqueueing: random plans shaped by a queue's features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import Deduplicated
from ..queues import Queue

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from ..handles import WorkflowHandle


@dataclass(frozen=True)
class EnqueueOp:
    """One enqueue of a plan: the arguments and the options to enqueue with."""

    args: tuple[Any, ...] = ()
    dedup_id: str | None = None
    priority: int | None = None
    partition_key: str | None = None
    delay: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def enqueue(self, queue: Queue, fn: Callable[..., Any] | str) -> WorkflowHandle[Any] | None:
        """Enqueue ``fn`` with this op's arguments and options; None when deduplicated (an
        active workflow of the queue holds the dedup id)."""
        q = queue.options(
            dedup_id=self.dedup_id,
            priority=self.priority,
            partition_key=self.partition_key,
            delay=self.delay,
        )
        try:
            return q.enqueue(fn, *self.args, **self.kwargs)
        except Deduplicated:
            return None


def enqueue_all(
    queue: Queue, fn: Callable[..., Any] | str, plan: Sequence[EnqueueOp]
) -> list[WorkflowHandle[Any] | None]:
    """Run a plan in order; one handle per op (None for a deduplicated one)."""
    return [op.enqueue(queue, fn) for op in plan]


def enqueue_ops(
    queue: Queue,
    *,
    args: SearchStrategy[tuple[Any, ...]] | None = None,
    dedup_ids: int = 3,
    priorities: tuple[int, int] = (0, 3),
    partition_keys: int = 3,
    max_delay: float = 2.0,
) -> SearchStrategy[EnqueueOp]:
    """One :class:`EnqueueOp` for ``queue``: see :func:`enqueue_plans`."""
    from hypothesis import strategies as st

    def maybe(strategy: SearchStrategy[Any], enabled: bool) -> SearchStrategy[Any]:
        return st.one_of(st.none(), strategy) if enabled else st.none()

    return st.builds(
        EnqueueOp,
        args=args if args is not None else st.just(()),
        dedup_id=maybe(
            st.sampled_from([f"dedup-{i}" for i in range(max(dedup_ids, 1))]), dedup_ids > 0
        ),
        priority=maybe(st.integers(*priorities), queue.priority_enabled),
        partition_key=(
            st.sampled_from([f"key-{i}" for i in range(max(partition_keys, 1))])
            if queue.partitioned
            else st.none()
        ),
        # Whole milliseconds: the database keeps delays to the millisecond.
        delay=maybe(st.integers(0, int(max_delay * 1000)).map(lambda ms: ms / 1000), max_delay > 0),
    )


def enqueue_plans(
    queue: Queue,
    *,
    args: SearchStrategy[tuple[Any, ...]] | None = None,
    min_size: int = 0,
    max_size: int = 20,
    dedup_ids: int = 3,
    priorities: tuple[int, int] = (0, 3),
    partition_keys: int = 3,
    max_delay: float = 2.0,
) -> SearchStrategy[list[EnqueueOp]]:
    """A hypothesis strategy of enqueue plans (lists of :class:`EnqueueOp`) for ``queue``:
    positional arguments drawn from ``args`` (a strategy of tuples; default no arguments),
    dedup ids from a pool of ``dedup_ids`` (0: none) so that some collide, priorities in the
    ``priorities`` range when the queue has priority_enabled=True, one of ``partition_keys`` keys on
    a partitioned queue, and delays up to ``max_delay`` seconds (0: none).

    >>> @given(plan=enqueue_plans(emails, args=st.tuples(st.emails())))
    ... def test_emails(plan):
    ...     enqueue_all(emails, send_email, plan)
    """
    from hypothesis import strategies as st

    return st.lists(
        enqueue_ops(
            queue,
            args=args,
            dedup_ids=dedup_ids,
            priorities=priorities,
            partition_keys=partition_keys,
            max_delay=max_delay,
        ),
        min_size=min_size,
        max_size=max_size,
    )
