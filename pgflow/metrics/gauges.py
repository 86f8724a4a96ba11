"""The queue-level gauges, read from the database at scrape time: per queue (waiting, delayed,
running, oldest wait, rate window, limits, paused, live workers), stranded work, workflows by
status, live executors per version. One process of a deployment serves them (the worker's
``--metrics-port``, the dashboard's ``/metrics``, or an application's own registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..management import QueueInfo, Stranded
    from ..versions import VersionInfo

STATUSES = (
    "ENQUEUED",
    "PENDING",
    "SUCCESS",
    "ERROR",
    "CANCELLED",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
)

# Each per-queue gauge: its name, its help, and its value for a queue (None: not for this one).
QUEUE_GAUGES: tuple[tuple[str, str, Callable[[QueueInfo], float | None]], ...] = (
    (
        "pgflow_queue_enqueued",
        "Workflows waiting in the queue (delayed ones included).",
        lambda q: q.enqueued,
    ),
    (
        "pgflow_queue_delayed",
        "Enqueued workflows whose delay has not run out.",
        lambda q: q.delayed,
    ),
    (
        "pgflow_queue_running",
        "Workflows of the queue PENDING (running, or awaiting adoption).",
        lambda q: q.pending,
    ),
    (
        "pgflow_queue_oldest_wait_seconds",
        "Seconds the oldest waiting workflow of the queue has waited (0 when none waits).",
        lambda q: q.oldest_wait_s or 0.0,
    ),
    (
        "pgflow_queue_rate_window_starts",
        "Workflows started in the queue's current rate-limit window.",
        lambda q: None if q.rate_limit is None else q.started_in_window or 0,
    ),
    (
        "pgflow_queue_rate_limit",
        "The queue's rate limit (starts per window).",
        lambda q: q.rate_limit,
    ),
    (
        "pgflow_queue_concurrency",
        "The queue's global concurrency limit.",
        lambda q: q.concurrency,
    ),
    (
        "pgflow_queue_paused",
        "1 when an operator paused the queue.",
        lambda q: 1.0 if q.paused else 0.0,
    ),
    (
        "pgflow_queue_live_workers",
        "Live worker processes serving the queue.",
        lambda q: q.live_workers,
    ),
)


def _gauge(name: str, doc: str, labels: list[str]) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, labels=labels)


def queue_gauges(queues: list[QueueInfo]) -> list[Any]:
    """One family per QUEUE_GAUGES entry, a sample per queue it applies to."""
    families = []
    for name, doc, value in QUEUE_GAUGES:
        family = _gauge(name, doc, ["queue"])
        for q in queues:
            found = value(q)
            if found is not None:
                family.add_metric([q.name], found)
        families.append(family)
    return families


def stranded_gauge(stranded: list[Stranded]) -> Any:
    """Waiting work no live worker can run, summed by queue and reason."""
    family = _gauge(
        "pgflow_stranded_workflows",
        "Waiting workflows no live worker can run, by reason "
        "(unknown_name, wrong_version, no_worker).",
        ["queue", "reason"],
    )
    totals: dict[tuple[str, str], int] = {}
    for s in stranded:
        key = (s.queue_name or "", s.reason)
        totals[key] = totals.get(key, 0) + s.count
    for (queue, reason), n in sorted(totals.items()):
        family.add_metric([queue, reason], n)
    return family


def version_gauges(versions: list[VersionInfo]) -> list[Any]:
    """Workflows by status (every status, 0 when none), live executors per version and all."""
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    live = _gauge(
        "pgflow_version_live_executors",
        "Live executors (worker processes and launched apps) per application version.",
        ["app_version"],
    )
    for v in versions:
        for status, n in v.work.items():
            by_status[status] = by_status.get(status, 0) + n
        live.add_metric([v.app_version or ""], v.live_executors)
    statuses = _gauge("pgflow_workflows", "Workflows in the database, by status.", ["status"])
    for status in (*STATUSES, *sorted(set(by_status) - set(STATUSES))):
        statuses.add_metric([status], by_status[status])
    executors = _gauge("pgflow_live_executors", "Live executors, all versions.", [])
    executors.add_metric([], sum(v.live_executors for v in versions))
    return [statuses, live, executors]


class QueueSource(Protocol):
    """What :func:`collect_queue_metrics` reads: a ``pgflow.Client`` (or App) has both."""

    def queue_report(self) -> tuple[list[QueueInfo], list[Stranded]]: ...

    def versions(self) -> list[VersionInfo]: ...


class QueueCollector:
    """A ``prometheus_client`` collector that reads the queues, the workflows by status and
    the live executors from the database on each scrape (a few short statements)."""

    def __init__(self, source: QueueSource) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []  # nothing at registration: no database query until a scrape

    def collect(self) -> Iterator[Any]:
        queues, stranded = self.source.queue_report()
        yield from queue_gauges(queues)
        yield stranded_gauge(stranded)
        yield from version_gauges(self.source.versions())


def collect_queue_metrics(client: QueueSource) -> QueueCollector:
    """A collector of the queue-level gauges, read from the database on each scrape.

    >>> from prometheus_client import REGISTRY
    >>> REGISTRY.register(pgflow.metrics.collect_queue_metrics(pgflow.Client(url)))
    """
    return QueueCollector(client)
