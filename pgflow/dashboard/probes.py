"""The dashboard's probes, for Prometheus and for health checks, open to everyone (read-only,
no admin session): ``/metrics`` (the queue-level gauges read from the database at this
scrape, and ``pgflow_database_up``) and ``/healthz`` (``/healthz/live``, ``/healthz/ready``,
or both). The per-process counters of workers are on ``pgflow worker --metrics-port``.

They use a small pool of their own, with short connect and statement timeouts, not the
pages' Client (whose reads wait out an outage): a probe answers now, whatever the database
is doing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from .. import management, metrics, versions
from ..db.pool import Database
from ..errors import PgflowError
from ..health import READY_TIMEOUT, DatabaseCheck, check_database, with_statement_timeout

if TYPE_CHECKING:
    from ..management import QueueInfo, Stranded
    from ..versions import VersionInfo
    from .app import Dashboard

log = structlog.get_logger("pgflow")

HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# Milliseconds one statement of a scrape may run (the count by status reads the whole table).
STATEMENT_TIMEOUT_MS = 5000


class _DatabaseUp:
    """``pgflow_database_up``: whether the readiness check of this scrape passed."""

    def __init__(self, check: DatabaseCheck) -> None:
        self.check = check

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "pgflow_database_up",
            "1 when the database answered SELECT 1 at this scrape.",
            value=1.0 if self.check.ok else 0.0,
        )


class _Source:
    """What the queue gauges read, through the probes' own pool."""

    def __init__(self, db: Database, heartbeat_timeout: float) -> None:
        self.db, self.heartbeat_timeout = db, heartbeat_timeout

    def queue_report(self) -> tuple[list[QueueInfo], list[Stranded]]:
        return management.queue_report(self.db, self.heartbeat_timeout)

    def versions(self) -> list[VersionInfo]:
        return versions.list_versions(self.db, self.heartbeat_timeout)


class _Read:
    """The queue gauges, read once before the scrape is encoded: a database error leaves
    them out of this scrape (logged) rather than fail it."""

    def __init__(self, source: metrics.QueueSource) -> None:
        try:
            self.families = list(metrics.collect_queue_metrics(source).collect())
        except PgflowError as exc:
            log.warning("metrics_queue_report_failed", error=str(exc))
            self.families = []

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


class Probes:
    """``/metrics`` and ``/healthz`` of one dashboard."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard
        settings = dashboard.client.settings
        # Built now, connected on first use (a Database opens no session until asked).
        self.db = Database(
            with_statement_timeout(settings.database_url or "", STATEMENT_TIMEOUT_MS),
            settings.schema,
            max_size=2,
            connect_timeout=READY_TIMEOUT,
            application_name="pgflow:dashboard-probes",
        )
        self.heartbeat_timeout = settings.heartbeat_timeout

    def close(self) -> None:
        self.db.close()

    def _scrape(self, accept: str | None) -> tuple[bytes, str]:
        check = check_database(self.db)
        collectors: list[Any] = [_DatabaseUp(check)]
        if check.ok:
            collectors.append(_Read(_Source(self.db, self.heartbeat_timeout)))
        return metrics.exposition(None, *collectors, accept=accept, process=False)

    async def scrape(self, request: Request) -> Response:
        if not metrics.available():
            return Response(
                "/metrics needs prometheus_client: pip install 'pgflow[dashboard]'\n",
                501,
                headers=HEADERS,
                media_type="text/plain",
            )
        body, content_type = await self.d.read(lambda: self._scrape(request.headers.get("accept")))
        return Response(body, 200, headers={**HEADERS, "Content-Type": content_type})

    async def health(self, request: Request) -> Response:
        """``/healthz/live``: this answer (the event loop turns). ``/healthz/ready``: the
        database answers ``SELECT 1`` on a fresh connection within the connect timeout.
        ``/healthz``: both. 200 when the verdict holds, else 503; JSON with the numbers."""
        which = request.url.path.rstrip("/").rpartition("/")[2]
        body: dict[str, Any] = {"live": True}
        if which != "live":
            check = await self.d.read(lambda: check_database(self.db))
            body.update(ready=check.ok, database=check.as_json())
        ok = body["live"] and body.get("ready", True)
        body["status"] = "ok" if ok else "unavailable"
        return Response(
            json.dumps(body), 200 if ok else 503, headers=HEADERS, media_type="application/json"
        )
