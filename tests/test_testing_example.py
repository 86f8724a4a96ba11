"""The README's example: property-test a queue's limits with pgflow.testing, as a user would.

It needs a PostgreSQL server it may create databases on: PGFLOW_TEST_DATABASE_URL, else the
one at 127.0.0.1:5432, else an embedded one.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import pgflow
from pgflow.testing import (
    Clock,
    Spans,
    check_history,
    database,
    drain,
    enqueue_all,
    enqueue_plans,
    use_database,
)

app = pgflow.App("mailer")
emails = app.queue("emails", concurrency=2, rate_limit=pgflow.Rate(5, per=1))
spans = Spans()


@app.workflow()
def send_email(to: str) -> str:
    with spans.record():  # when the body ran, to check concurrency from the inside too
        return f"sent to {to}"


@settings(max_examples=15, deadline=None)
@given(plan=enqueue_plans(emails, args=st.tuples(st.emails()), max_size=15, max_delay=3.0))
def test_emails_respect_the_queue_limits(plan):
    spans.clear()
    with database() as url, use_database(app, url):
        handles = enqueue_all(emails, send_email, plan)

        summary = drain(app, clock=Clock(app))  # the worker, in this process, on moved time

        # Every enqueued email was sent (deduplicated ones were refused at enqueue time).
        queued = [h for h in handles if h is not None]
        assert summary.done == len(queued) and summary.failed == 0 and summary.left == 0
        for h, op in zip(handles, plan, strict=True):
            if h is not None:
                assert h.result(timeout=0) == f"sent to {op.args[0]}"
        # Never more than 2 at once nor 5 starts a second, FIFO among what was due; the clock,
        # not the test's wall time, waited out the delays and the rate windows.
        check_history(app, emails, spans=spans)
