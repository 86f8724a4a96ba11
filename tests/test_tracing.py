"""OpenTelemetry (pgflow/tracing.py) on a real database: spans per workflow run and per step,
and the trace context a row carries from its enqueuer to the worker that runs it.

In this process pgflow's tracer is swapped for one of a private SDK provider with an in-memory
exporter (the global provider can be set once per process, and other tests must stay untraced).
The worker-process test runs ``pgflow worker`` as a subprocess whose task module installs the
SDK, exporting to a file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import pgflow
from pgflow import tracing
from pgflow.errors import (
    DatabaseUnavailable,
    FencedOut,
    WorkflowCancelled,
    WorkflowParked,
)
from pgflow.records import Claimed
from pgflow.starting import try_adopt
from pgflow.testing import drain, use_database
from tests import tracing_app
from tests.processes import Worker
from tests.test_worker import FAST, query

ROOT = Path(__file__).resolve().parents[1]
M = "tests.tracing_app."  # the registered names: the functions' qualified names


@dataclass
class Traced:
    exporter: InMemorySpanExporter
    web: trace.Tracer  # the application's own tracer (the "web request")

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def one(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return found[0]


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_TRACER", provider.get_tracer(tracing.TRACER_NAME))
    yield Traced(exporter, provider.get_tracer("web"))
    provider.shutdown()


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    with use_database(tracing_app.app, database_url) as a:
        yield a


def ids(span: ReadableSpan) -> tuple[int, int]:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.trace_id, ctx.span_id


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def carried(url: str, workflow_id: str) -> Any:
    rows = query(
        url,
        "SELECT trace_context FROM pgflow.workflow_status WHERE workflow_id = %s",
        (workflow_id,),
    )
    return rows[0]["trace_context"]


# -- spans -------------------------------------------------------------------------------------


def test_a_workflow_run_is_one_span_with_a_child_span_per_step(
    app: pgflow.App, traced: Traced, database_url: str
) -> None:
    h = tracing_app.jobs.enqueue(tracing_app.two_steps, 5)
    assert carried(database_url, h.workflow_id) is None  # no span was active: nothing stored
    assert drain(app, [tracing_app.jobs]).done == 1
    assert h.result(timeout=5) == 11

    wf = traced.one(f"pgflow.workflow {M}two_steps")
    assert wf.parent is None  # nothing to continue: a trace of its own
    assert wf.kind is trace.SpanKind.CONSUMER
    assert dict(wf.attributes or {}) == {
        "pgflow.workflow_id": h.workflow_id,
        "pgflow.workflow_name": f"{M}two_steps",
        "pgflow.queue": "jobs",
        "pgflow.attempt": 1,
        "pgflow.executor_id": h.status().executor_id,
        "pgflow.status": "SUCCESS",
    }
    assert wf.status.status_code is StatusCode.UNSET

    steps = sorted(traced.spans("pgflow.step"), key=lambda s: s.start_time or 0)
    assert [s.name for s in steps] == [f"pgflow.step {M}double", f"pgflow.step {M}add_one"]
    for number, (span, kind) in enumerate(zip(steps, ["step", "transaction"], strict=True), 1):
        assert span.get_span_context().trace_id == ids(wf)[0]  # type: ignore[union-attr]
        assert parent_of(span) == ids(wf)[1]
        assert dict(span.attributes or {}) == {
            "pgflow.workflow_id": h.workflow_id,
            "pgflow.step_name": span.name.split()[1],
            "pgflow.step_number": number,
            "pgflow.step_kind": kind,
            "pgflow.attempt": 1,
            "pgflow.status": "SUCCESS",
        }


@pytest.mark.parametrize("queue", ["jobs", "limited", "keyed"])
def test_an_enqueue_inside_a_request_span_continues_its_trace_in_the_worker(
    app: pgflow.App, traced: Traced, database_url: str, queue: str
) -> None:
    # Each claim statement returns the context: claim_workflows, claim_limited_v3 and
    # claim_partitions_v3.
    q = {"jobs": tracing_app.jobs, "limited": tracing_app.limited, "keyed": tracing_app.keyed}
    opts = q[queue].options(partition_key="eu") if queue == "keyed" else q[queue]
    with traced.web.start_as_current_span("web.request"):
        h = opts.enqueue(tracing_app.two_steps, 1)
    request = traced.one("web.request")
    trace_id, span_id = ids(request)
    stored = json.loads(carried(database_url, h.workflow_id))
    # (Its last field, the flags, says at least "sampled".)
    assert stored["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")

    assert drain(app, [queue]).done == 1
    wf = traced.one(f"pgflow.workflow {M}two_steps")
    assert ids(wf)[0] == trace_id and parent_of(wf) == span_id
    assert (wf.attributes or {})["pgflow.queue"] == queue
    assert {parent_of(s) for s in traced.spans("pgflow.step")} == {ids(wf)[1]}


def test_a_client_enqueue_enqueue_many_and_a_start_carry_the_context_too(
    app: pgflow.App, traced: Traced, database_url: str
) -> None:
    client = pgflow.Client(database_url)
    try:
        with traced.web.start_as_current_span("web.request"):
            queued = client.enqueue("jobs", f"{M}two_steps", 3)
            many = tracing_app.jobs.enqueue_many(tracing_app.two_steps, [(5,), (6,)])
            started = app.start(tracing_app.two_steps, 4)
            assert started.result(timeout=10) == 9
    finally:
        client.close()
    trace_id, span_id = ids(traced.one("web.request"))
    for h in (queued, started, *many):
        assert carried(database_url, h.workflow_id) is not None
    drain(app, [tracing_app.jobs])
    runs = traced.spans("pgflow.workflow")
    assert len(runs) == 4
    assert {(ids(s)[0], parent_of(s)) for s in runs} == {(trace_id, span_id)}
    # A start runs in this process, not from a queue.
    by_id = {(s.attributes or {})["pgflow.workflow_id"]: s for s in runs}
    assert by_id[started.workflow_id].kind is trace.SpanKind.INTERNAL


def test_children_are_children_of_their_parents_span(app: pgflow.App, traced: Traced) -> None:
    h = tracing_app.jobs.enqueue(tracing_app.parent)
    assert drain(app, [tracing_app.jobs]).done == 2  # (the inline child is on no queue)
    assert h.result(timeout=5) == 5
    runs = {(s.attributes or {})["pgflow.workflow_id"]: s for s in traced.spans("pgflow.workflow")}
    top = runs[h.workflow_id]
    assert top.parent is None
    # Step 1 enqueued a child (run later, from the queue), step 2 ran one inline.
    for child_id in (f"{h.workflow_id}-1", f"{h.workflow_id}-2"):
        assert ids(runs[child_id])[0] == ids(top)[0]
        assert parent_of(runs[child_id]) == ids(top)[1]


def test_an_adopted_workflow_keeps_its_trace(
    app: pgflow.App, traced: Traced, database_url: str
) -> None:
    with traced.web.start_as_current_span("web.request"):
        h = tracing_app.jobs.enqueue(tracing_app.two_steps, 1)
    # As if its owner had died after the claim: PENDING, ownerless, of this version.
    query(
        database_url,
        "UPDATE pgflow.workflow_status SET status = 'PENDING', executor_id = NULL, "
        "app_version = %s WHERE workflow_id = %s RETURNING workflow_id",
        (app.app_version, h.workflow_id),
    )
    app.executor.ensure_registered()
    claimed = try_adopt(app.runtime, h.workflow_id, app.executor.executor_id)
    assert claimed is not None
    assert claimed.trace_context == carried(database_url, h.workflow_id) is not None


# -- errors ------------------------------------------------------------------------------------


def test_a_failing_step_records_its_exception_and_retries(app: pgflow.App, traced: Traced) -> None:
    h = tracing_app.jobs.enqueue(tracing_app.fails)
    assert drain(app, [tracing_app.jobs]).failed == 1
    with pytest.raises(ValueError):
        h.result(timeout=5)

    step = traced.one(f"pgflow.step {M}explode")
    attrs = dict(step.attributes or {})
    assert attrs["pgflow.status"] == "ERROR" and attrs["pgflow.attempt"] == 2
    assert step.status.status_code is StatusCode.ERROR
    assert step.status.description == (
        "ValueError: cannot reach postgresql://app:***@db.example/shop"
    )
    retry, raised = step.events
    assert retry.name == "pgflow.step_retry"
    assert dict(retry.attributes or {}) == {
        "pgflow.step_name": f"{M}explode",
        "pgflow.attempt": 1,
        "exception.type": "ValueError",
        "exception.message": "cannot reach postgresql://app:***@db.example/shop",
    }
    assert raised.name == "exception"
    event = dict(raised.attributes or {})
    assert event["exception.type"] == "ValueError"
    assert event["exception.message"] == "cannot reach postgresql://app:***@db.example/shop"
    assert "ValueError" in str(event["exception.stacktrace"])
    # Nothing pgflow records contains a password.
    assert "s3cret" not in repr([e.attributes for e in step.events])

    wf = traced.one(f"pgflow.workflow {M}fails")
    assert (wf.attributes or {})["pgflow.status"] == "ERROR"
    assert wf.status.status_code is StatusCode.ERROR
    assert [e.name for e in wf.events] == ["exception"]
    assert "s3cret" not in str(wf.events[0].attributes)


@pytest.mark.parametrize(
    ("exc", "status", "failed"),
    [
        (WorkflowParked("w", 60), "PARKED", False),
        (FencedOut("w"), "FENCED_OUT", False),
        (WorkflowCancelled("w"), "CANCELLED", False),
        (WorkflowCancelled("w", "past its deadline"), "CANCELLED", True),
        (DatabaseUnavailable("away"), "HANDED_BACK", True),
        (ValueError("x"), "ERROR", True),
        (KeyboardInterrupt(), "INTERRUPTED", True),
    ],
)
def test_how_a_run_ended(exc: BaseException, status: str, failed: bool) -> None:
    assert tracing.ending(exc) == (status, failed)


# -- without OpenTelemetry ---------------------------------------------------------------------


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"tracing off, yet opentelemetry's {name} was used")


def test_with_tracing_off_the_hooks_touch_nothing(
    app: pgflow.App, traced: Traced, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "ENABLED", False)
    for name in ("_TRACER", "trace", "propagate", "otel_context"):
        monkeypatch.setattr(tracing, name, Untouchable())
    with traced.web.start_as_current_span("web.request"):
        h = tracing_app.jobs.enqueue(tracing_app.two_steps, 5)
        failing = tracing_app.jobs.enqueue(tracing_app.fails)
    summary = drain(app, [tracing_app.jobs])
    assert (summary.done, summary.failed) == (1, 1)
    assert h.result(timeout=5) == 11
    assert failing.status().status is pgflow.Status.ERROR
    assert carried(database_url, h.workflow_id) is None
    assert [s.name for s in traced.spans()] == ["web.request"]


def test_the_api_alone_makes_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    # opentelemetry-api installed (often by another package) but no SDK configured.
    monkeypatch.setattr(tracing, "_TRACER", trace.ProxyTracer(tracing.TRACER_NAME))
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    run = Claimed("w", "wf", "json", "[]", 1, trace_context='{"traceparent": "00-ab-cd-01"}')
    body = trace.get_current_span
    assert tracing.run_workflow(run, body, (), {}) is trace.INVALID_SPAN
    assert tracing.run_step("w", 1, "s", "step", body) is trace.INVALID_SPAN


def test_without_the_package_tracing_is_off() -> None:
    # A fresh interpreter where `import opentelemetry` fails, as when the extra is not installed.
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from pgflow import tracing\n"
        "assert tracing.ENABLED is False\n"
        "assert tracing.capture() is None\n"
        "assert tracing.run_step('w', 1, 's', 'step', lambda: 42) == 42\n"
        "assert tracing.run_workflow(None, lambda a, b=0: a + b, (1,), {'b': 2}) == 3\n"
        "tracing.step_retried('s', 1, ValueError(), True); tracing.flush()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- a real worker process ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_process_continues_the_request_trace(
    app: pgflow.App, traced: Traced, database_url: str, tmp_path: Path
) -> None:
    with traced.web.start_as_current_span("web.request"):
        ok = tracing_app.jobs.enqueue(tracing_app.two_steps, 1)
        bad = tracing_app.limited.enqueue(tracing_app.fails)
    trace_id, span_id = ids(traced.one("web.request"))
    exported = tmp_path / "spans.jsonl"
    w = Worker(
        database_url,
        tmp_path,
        "-P",
        "1",
        "-c",
        "2",
        "-Q",
        "jobs,limited",
        "--burst",
        *FAST,
        app="tests.tracing_app",
        env={"PGFLOW_TEST_SPANS": str(exported)},
    )
    assert w.wait(60) == 0, w.stderr()[-4000:]
    # The batch processor's delay is ten minutes: these were exported by the worker process's
    # flush before its os._exit.
    spans = [json.loads(line) for line in exported.read_text().splitlines()]
    runs = {
        s["attributes"]["pgflow.workflow_id"]: s
        for s in spans
        if s["name"].startswith("pgflow.workflow")
    }
    assert set(runs) == {ok.workflow_id, bad.workflow_id}
    for run in runs.values():
        assert run["trace_id"] == f"{trace_id:032x}"
        assert run["parent_id"] == f"{span_id:016x}"
        assert run["pid"] != w.pid  # a worker process, not the supervisor
    assert runs[ok.workflow_id]["status"] == "UNSET"
    assert runs[bad.workflow_id]["status"] == "ERROR"
    steps = [s for s in spans if s["name"].startswith("pgflow.step")]
    assert sorted(s["name"] for s in steps) == [
        f"pgflow.step {M}add_one",
        f"pgflow.step {M}double",
        f"pgflow.step {M}explode",
    ]
    for s in steps:
        owner = runs[s["attributes"]["pgflow.workflow_id"]]
        assert (s["trace_id"], s["parent_id"]) == (owner["trace_id"], owner["span_id"])
    explode = next(s for s in steps if s["name"].endswith("explode"))
    assert explode["events"] == ["pgflow.step_retry", "exception"]
    assert "s3cret" not in exported.read_text()
