"""Helpers for testing your own pgflow application, on a real database.

Property-test a queue's flow control end to end: enqueue random plans, run a worker in-process
with time under the test's control, and check the recorded history against the queue's limits.

>>> from hypothesis import given, settings
>>> from pgflow.testing import Clock, check_history, database, drain, enqueue_all, \\
...     enqueue_plans, use_database
>>> @settings(max_examples=20, deadline=None)
... @given(plan=enqueue_plans(emails))
... def test_emails_respect_their_limits(plan):
...     with database() as url, use_database(app, url):
...         enqueue_all(emails, send_email, plan)
...         drain(app, clock=Clock(app))
...         check_history(app, emails)

- :func:`database` / the ``pgflow_database`` pytest fixture: a fresh migrated database;
  :class:`DatabaseServer` makes many (copies of one migrated template, for a suite);
  :func:`use_database` points an app at it for a block.
- :class:`Clock`: moves database time (delays, rate windows, heartbeats, deadlines) for an app.
- :func:`drain`: the real worker, in this process, until the queues are empty.
- :func:`enqueue_plans`: hypothesis strategies of enqueue operations for a queue.
- :func:`check_history`: concurrency, worker concurrency, rate, partition, priority/FIFO and
  deduplication invariants over the recorded history (AssertionError with the details).
"""

from __future__ import annotations

from .clock import Clock
from .databases import DatabaseServer, database, server_url, use_database
from .draining import DrainSummary, drain
from .history import (
    HistoryRow,
    Span,
    Spans,
    check_history,
    check_rows,
    first_excess,
    load_history,
)
from .plans import EnqueueOp, enqueue_all, enqueue_ops, enqueue_plans

__all__ = [
    "Clock",
    "DatabaseServer",
    "DrainSummary",
    "EnqueueOp",
    "HistoryRow",
    "Span",
    "Spans",
    "check_history",
    "check_rows",
    "database",
    "drain",
    "enqueue_all",
    "enqueue_ops",
    "enqueue_plans",
    "first_excess",
    "load_history",
    "server_url",
    "use_database",
]

try:
    from .databases import pgflow_database  # noqa: F401 - only when pytest is installed
except ImportError:  # pragma: no cover
    pass
else:
    __all__.append("pgflow_database")
