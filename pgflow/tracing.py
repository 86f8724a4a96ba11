"""OpenTelemetry: a span per workflow run and per step, and trace context carried through enqueue.

The engine calls the functions below at four points: where a workflow row is built for an
enqueue or a start (:func:`capture`: the current trace context, stored with the row), where a
claimed workflow's body runs (:func:`run_workflow`: its span, under the stored context, so a web
request's trace continues into the worker), where a step runs (:func:`run_step`: a child span)
and where a step attempt is retried (:func:`step_retried`: an event on that span).

They use ``opentelemetry-api`` when it is installed (``pip install 'pgflow[otel]'``) and do
nothing otherwise: without the package each is one test of :data:`ENABLED`, so the engine never
asks. pgflow only *creates* spans, with the global tracer provider (tracer name ``pgflow``);
the application configures the SDK, its exporters and its propagators, as for any library.
With the API but no provider set, no span is made (:func:`_configured`), nor a step's span under
a span that is not recorded (an unsampled trace). ``python -m benchmarks.tracing`` measures
the cost in each case.

Names (the README's "OpenTelemetry" section lists them):

- span ``pgflow.workflow <name>``: one run of a workflow's body (a recovered or re-claimed
  workflow makes one span per run); attributes ``pgflow.workflow_id``, ``pgflow.workflow_name``,
  ``pgflow.queue``, ``pgflow.attempt`` (the run's number), ``pgflow.executor_id`` and, at its
  end, ``pgflow.status``;
- span ``pgflow.step <name>``: one step that runs (a replayed step makes none), its retries and
  its checkpoint; attributes ``pgflow.workflow_id``, ``pgflow.step_name``,
  ``pgflow.step_number``, ``pgflow.step_kind`` (``step`` or ``transaction``), ``pgflow.attempt``
  (the attempts it took) and ``pgflow.status``; a retried attempt is a ``pgflow.step_retry``
  event on it.

``pgflow.status`` is SUCCESS, ERROR, CANCELLED, PARKED (a durable sleep handed the workflow back
to its queue), FENCED_OUT (another executor owns it now), HANDED_BACK (the database stayed away)
or INTERRUPTED. The span's status is ERROR, with the exception recorded, for ERROR, a deadline's
cancel, HANDED_BACK and INTERRUPTED; otherwise it is left unset, as the OpenTelemetry
specification asks of libraries. Messages and tracebacks pass through :func:`redact`.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import DatabaseUnavailable, FencedOut, WorkflowCancelled, WorkflowParked
from .redaction import redact

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # the `otel` extra is not installed: every hook below is a no-op
    ENABLED = False
else:
    ENABLED = True

if TYPE_CHECKING:
    from opentelemetry.trace import Span

T = TypeVar("T")

TRACER_NAME = "pgflow"
WORKFLOW_SPAN = "pgflow.workflow"
STEP_SPAN = "pgflow.step"
STEP_RETRY_EVENT = "pgflow.step_retry"

# A carrier larger than this is not stored (a propagator's headers are a few hundred bytes; a
# huge baggage would be copied into every row the request enqueues).
MAX_CARRIER_CHARS = 8192

if ENABLED:
    # A proxy until the application sets its tracer provider (then it resolves to that one).
    _TRACER = trace.get_tracer(TRACER_NAME)


class WorkflowRun(Protocol):
    """What a run's span reads of the claimed row (``workflows.Claimed`` has these)."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def queue_name(self) -> str | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def executor_id(self) -> str | None: ...
    @property
    def trace_context(self) -> str | None: ...


# -- enqueue and start: the context the row carries -------------------------------------------


def capture() -> str | None:
    """The current trace context as the global propagator writes it (W3C ``traceparent`` and
    ``tracestate`` by default), as a JSON object, for the row's ``trace_context`` column; None
    when tracing is off or no span is active."""
    if not ENABLED:
        return None
    return _capture()


def _capture() -> str | None:
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return None
    text = json.dumps(carrier, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= MAX_CARRIER_CHARS else None


def _extract(text: str | None) -> Any:
    """The context a row carried, or None (then the span's parent is the current context)."""
    if not text:
        return None
    try:
        carrier = json.loads(text)
    except ValueError:
        return None
    if not isinstance(carrier, dict):
        return None
    return propagate.extract({str(k): str(v) for k, v in carrier.items()})


# -- the spans ---------------------------------------------------------------------------------


def run_workflow(
    run: WorkflowRun, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    """Call a workflow's body inside its ``pgflow.workflow`` span, the child of the context its
    row carried (the enqueuer's span), and current while the body runs: its steps, the children
    it starts and any span the body makes are this span's children."""
    if not ENABLED or not _configured():
        return fn(*args, **kwargs)
    carried = _extract(run.trace_context)
    # Attached first, so the carried baggage is current in the body too.
    token = otel_context.attach(carried) if carried is not None else None
    try:
        attributes: dict[str, str | int] = {
            "pgflow.workflow_id": run.workflow_id,
            "pgflow.workflow_name": run.name,
            "pgflow.attempt": run.attempt,
        }
        if run.queue_name is not None:
            attributes["pgflow.queue"] = run.queue_name
        if run.executor_id is not None:
            attributes["pgflow.executor_id"] = run.executor_id
        with _TRACER.start_as_current_span(
            f"{WORKFLOW_SPAN} {run.name}",
            kind=SpanKind.CONSUMER if run.queue_name is not None else SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            return _traced(span, fn, *args, **kwargs)
    finally:
        if token is not None:
            otel_context.detach(token)


def run_step(workflow_id: str, number: int, name: str, kind: str, body: Callable[[], T]) -> T:
    """Run one step (``body``: its attempts and its checkpoint) inside its ``pgflow.step`` span,
    a child of the workflow's span."""
    if not ENABLED or not trace.get_current_span().is_recording():
        # Its span would not be recorded either (the default sampler follows the parent): no
        # SDK, or the workflow's trace is not sampled.
        return body()
    with _TRACER.start_as_current_span(
        f"{STEP_SPAN} {name}",
        attributes={
            "pgflow.workflow_id": workflow_id,
            "pgflow.step_name": name,
            "pgflow.step_number": number,
            "pgflow.step_kind": kind,
            "pgflow.attempt": 1,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        return _traced(span, body)


def _configured() -> bool:
    """Whether spans may be recorded: False while the application has set no tracer provider
    (opentelemetry-api alone, often installed by another package: its spans are no-ops, and
    making one costs about ten microseconds for nothing). Until a provider is set, the API's
    ProxyTracer resolves to a NoOpTracer (its ``_tracer``; were that attribute ever to go,
    spans would be made, as no-ops: slower, still right)."""
    return not isinstance(getattr(_TRACER, "_tracer", _TRACER), trace.NoOpTracer)


def step_retried(name: str, failed_attempt: int, exc: BaseException, counted: bool) -> None:
    """An attempt of step ``name`` failed and is retried: an event on the current span, and
    ``counted`` (the attempt of a recorded step, whose span is current) the next attempt's
    number in ``pgflow.attempt``."""
    if not ENABLED:
        return
    span = trace.get_current_span()
    span.add_event(
        STEP_RETRY_EVENT,
        {
            "pgflow.step_name": name,
            "pgflow.attempt": failed_attempt,
            "exception.type": _type_name(exc),
            "exception.message": redact(str(exc)),
        },
    )
    if counted:
        span.set_attribute("pgflow.attempt", failed_attempt + 1)


def flush(timeout: float = 5.0) -> None:
    """Export the spans the provider still holds (a worker process calls it before it exits
    with ``os._exit``, which skips the SDK's own exit hook)."""
    if not ENABLED:
        return
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(int(timeout * 1000))


def _traced(span: Span, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _ended(span, exc)
        raise
    span.set_attribute("pgflow.status", "SUCCESS")
    return result


def ending(exc: BaseException) -> tuple[str, bool]:
    """``(pgflow.status, is an error)`` for a run or step that raised ``exc`` (pure)."""
    if isinstance(exc, WorkflowParked):
        return "PARKED", False
    if isinstance(exc, FencedOut):
        return "FENCED_OUT", False
    if isinstance(exc, WorkflowCancelled):
        # Cancelled by someone: not a failure; past its deadline: a timeout, one.
        return "CANCELLED", exc.reason != "cancelled"
    if isinstance(exc, DatabaseUnavailable):
        return "HANDED_BACK", True
    if isinstance(exc, Exception):
        return "ERROR", True
    return "INTERRUPTED", True  # KeyboardInterrupt, SystemExit


def _ended(span: Span, exc: BaseException) -> None:
    status, failed = ending(exc)
    span.set_attribute("pgflow.status", status)
    if not failed:
        return
    message = redact(str(exc))
    # The SDK formats the traceback too; ours replaces it, redacted like a recorded error.
    span.record_exception(
        exc,
        attributes={
            "exception.message": message,
            "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
        },
        escaped=True,
    )
    span.set_status(StatusCode.ERROR, f"{_type_name(exc)}: {message}")


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
