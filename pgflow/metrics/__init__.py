"""pgflow's Prometheus metrics: every name in one place, and the calls the engine makes.

The engine calls the functions below (``metrics.claimed(queue, n)``, ...). They record into
``prometheus_client`` when it is installed (``pip install 'pgflow[metrics]'``) and do nothing
otherwise, so the engine never asks. The instruments are built on first use, not at import:
``pgflow worker --metrics-port`` first switches ``prometheus_client`` to multiprocess mode
(:func:`enable_multiprocess`), so that each forked worker process writes its own files and the
supervisor adds them up at scrape time.

This module keeps the one piece of process-wide state in pgflow: Prometheus's model is one
registry per process, and an application that already serves ``prometheus_client``'s default
registry (a web app calling ``app.start``) sees pgflow's metrics there without doing anything.

Labels stay bounded: queue, workflow and step names, statuses; never a workflow id.
:func:`collect_queue_metrics` is the other half: gauges read from the database at scrape time
(queues, statuses, executors), for one process of a deployment to serve.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .gauges import QueueCollector, QueueSource, collect_queue_metrics

__all__ = ["QueueCollector", "QueueSource", "collect_queue_metrics"]

# Seconds; a no-op step is ~1 ms (its checkpoint), a workflow may run for hours.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
)


class _Instruments:
    """The per-process counters and histograms (see the README's table)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.claims = Counter(
            "pgflow_claims", "Workflows claimed from a queue by this worker.", ["queue"]
        )
        self.completed = Counter(
            "pgflow_workflows_completed",
            "Workflows whose final status this process wrote (SUCCESS, ERROR, CANCELLED).",
            ["queue", "workflow", "status"],
        )
        self.workflow_seconds = Histogram(
            "pgflow_workflow_duration_seconds",
            "Seconds of one run of a workflow, from its start in this process to its end.",
            ["queue", "workflow", "status"],
            buckets=DURATION_BUCKETS,
        )
        self.step_seconds = Histogram(
            "pgflow_step_duration_seconds",
            "Seconds a step took to run and be checkpointed, retries included.",
            ["step", "status"],
            buckets=DURATION_BUCKETS,
        )
        self.step_retries = Counter(
            "pgflow_step_retries", "Step attempts that failed and were retried.", ["step"]
        )
        self.recoveries = Counter(
            "pgflow_recoveries",
            "Workflows taken back from dead executors, by the status they went to.",
            ["status"],
        )
        self.adoptions = Counter(
            "pgflow_adoptions",
            "Ownerless PENDING workflows this process took over to run.",
            ["queue", "workflow"],
        )
        self.fenced = Counter(
            "pgflow_fenced_writes",
            "Checkpoints or final statuses refused because the run no longer owned its "
            "workflow (adopted elsewhere, or cancelled meanwhile).",
            ["kind"],
        )
        self.reconnects = Counter(
            "pgflow_database_reconnects", "Outages of the database this process came through."
        )
        self.unreachable = Counter(
            "pgflow_database_unreachable_seconds",
            "Seconds this process could not reach the database (summed over processes).",
        )
        # Labelled children by (family, values): a dict hit instead of labels()'s checks and
        # lock, a third of a call's cost. A race only looks the same child up twice.
        self._children: dict[tuple[Any, ...], Any] = {}

    def families(self) -> list[Any]:
        return [f for f in vars(self).values() if f is not self._children]

    def child(self, family: Any, *values: str) -> Any:
        key = (id(family), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*values)
        return found


class _State:
    """The instruments once built; ``tried``: the import was tried (it may have failed)."""

    def __init__(self) -> None:
        self.instruments: _Instruments | None = None
        self.tried = False
        self.lock = threading.Lock()


_STATE = _State()


def _build() -> _Instruments | None:
    with _STATE.lock:
        if not _STATE.tried:
            _STATE.tried = True
            try:
                _STATE.instruments = _Instruments()
            except ImportError:  # prometheus_client is not installed: record nothing
                _STATE.instruments = None
        return _STATE.instruments


def _get() -> _Instruments | None:
    found = _STATE.instruments
    if found is None and not _STATE.tried:
        found = _build()
    return found


def available() -> bool:
    """True when prometheus_client is installed (the ``pgflow[metrics]`` extra)."""
    return _get() is not None


# -- what the engine records -------------------------------------------------------------------


def claimed(queue: str, n: int) -> None:
    if n and (m := _get()) is not None:
        m.child(m.claims, queue).inc(n)


def workflow_finished(queue: str | None, workflow: str, status: str, seconds: float | None) -> None:
    """A final status was written (counted once the write committed, fenced)."""
    if (m := _get()) is not None:
        m.child(m.completed, queue or "", workflow, status).inc()
        if seconds is not None:
            m.child(m.workflow_seconds, queue or "", workflow, status).observe(seconds)


def step_finished(step: str, ok: bool, seconds: float) -> None:
    if (m := _get()) is not None:
        m.child(m.step_seconds, step, "success" if ok else "error").observe(seconds)


def step_retried(step: str) -> None:
    if (m := _get()) is not None:
        m.child(m.step_retries, step).inc()


def recovered(statuses: list[str]) -> None:
    """Workflows released from dead executors, each by the status it went to."""
    if statuses and (m := _get()) is not None:
        for status in statuses:
            m.child(m.recoveries, status).inc()


def adopted(queue: str | None, workflow: str) -> None:
    if (m := _get()) is not None:
        m.child(m.adoptions, queue or "", workflow).inc()


def write_fenced(kind: str, n: int = 1) -> None:
    """``n`` writes refused by the fence: ``kind`` is 'checkpoint' or 'final'."""
    if n and (m := _get()) is not None:
        m.child(m.fenced, kind).inc(n)


def database_away(seconds: float) -> None:
    """``seconds`` more of an outage went by (called while it lasts and when it ends)."""
    if seconds > 0 and (m := _get()) is not None:
        m.unreachable.inc(seconds)


def database_reconnected() -> None:
    if (m := _get()) is not None:
        m.reconnects.inc()


# -- multiprocess mode (pgflow worker --metrics-port) --------------------------------------------


def enable_multiprocess(path: str) -> None:
    """Record into files under ``path`` from now on, one set per process (forked children
    included), for :func:`exposition` to add up. Call before forking the worker processes."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values: Any = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client picks its value class when first imported (the task module may
        # have imported it already): metrics made from now on use the files.
        values.ValueClass = values.MultiProcessValue()
    with _STATE.lock:
        built, _STATE.instruments, _STATE.tried = _STATE.instruments, None, False
    if built is not None:
        # Made before: their values live in this process's memory. Built again on next use.
        from prometheus_client import REGISTRY

        for family in built.families():
            REGISTRY.unregister(family)


def process_exited(path: str, pid: int) -> None:
    """A worker process ended (reaped): drop its live gauges and fold its counters and
    histograms into the folder's archive files, so that a worker replacing its processes
    for days does not leave a file per process for every scrape to read."""
    try:
        from prometheus_client import mmap_dict, multiprocess
    except ImportError:
        return
    files: Any = mmap_dict.MmapedDict  # untyped, as is the rest of prometheus_client's internals
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    for kind in ("counter", "histogram"):
        dead = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        # Only this (the supervisor's) loop writes the archive, and scrapes run in it too.
        archive = files(os.path.join(path, f"{kind}_archive.db"))
        try:
            for key, value, _, _ in files.read_all_values_from_file(dead):
                total, _ = archive.read_value(key)
                archive.write_value(key, total + value, 0.0)
        finally:
            archive.close()
        os.remove(dead)


def exposition(
    path: str | None, *collectors: Any, accept: str | None = None, process: bool = True
) -> tuple[bytes, str]:
    """The text of a scrape and its content type: the files under ``path`` added up (every
    process's counters and histograms; None: this process's default registry, unless
    ``process`` is False) and ``collectors`` (gauges read at scrape time)."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import exposition as expo
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if path is None and process:
        registry.register(_Both(REGISTRY, collectors))
    else:
        if path is not None:
            MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        for c in collectors:
            registry.register(c)
    encoder, content_type = expo.choose_encoder(accept or "")
    return encoder(registry), content_type


class _Both:
    """The default registry and extra collectors, as one collector."""

    def __init__(self, registry: Any, collectors: tuple[Any, ...]) -> None:
        self.parts = (registry, *collectors)

    def collect(self) -> Iterator[Any]:
        for part in self.parts:
            yield from part.collect()
