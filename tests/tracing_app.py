"""The task module of tests/test_tracing.py: steps that succeed and fail, children.

With ``PGFLOW_TEST_SPANS`` set (the ``pgflow worker`` subprocess of the tests), this module
installs the OpenTelemetry SDK as the application would, with a batch processor whose delay is
ten minutes: only the worker process's flush before it exits exports the spans, to that file,
one JSON object a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import pgflow

app = pgflow.App("tracing-tests")

jobs = app.queue("jobs")
limited = app.queue("limited", concurrency=4)
keyed = app.queue("keyed", partitioned=True, concurrency=2)


@app.step()
def double(x: int) -> int:
    return 2 * x


@app.transaction()
def add_one(x: int) -> int:
    return x + 1


@app.workflow()
def two_steps(x: int) -> int:
    return add_one(double(x))


@app.step(retries=1, interval=0.01)
def explode() -> None:
    raise ValueError("cannot reach postgresql://app:s3cret@db.example/shop")


@app.workflow()
def fails() -> None:
    explode()


@app.workflow()
def parent() -> int:
    jobs.enqueue(two_steps, 1)  # queued: runs later, wherever it is claimed
    return two_steps(2)  # started here, inline


class FileExporter(SpanExporter):
    """Appends each span to a file as JSON (what the test compares: ids, names, attributes)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for s in spans:
                ctx = s.get_span_context()
                assert ctx is not None
                out.write(
                    json.dumps(
                        {
                            "name": s.name,
                            "trace_id": f"{ctx.trace_id:032x}",
                            "span_id": f"{ctx.span_id:016x}",
                            "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                            "attributes": dict(s.attributes or {}),
                            "status": s.status.status_code.name,
                            "events": [e.name for e in s.events],
                            "pid": os.getpid(),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


_path = os.environ.get("PGFLOW_TEST_SPANS")
# A worker process inherits the supervisor's provider through fork (then imports this module
# afresh): set it once.
if _path and not isinstance(trace.get_tracer_provider(), TracerProvider):
    _provider = TracerProvider()
    _provider.add_span_processor(
        BatchSpanProcessor(FileExporter(_path), schedule_delay_millis=600_000)
    )
    trace.set_tracer_provider(_provider)
