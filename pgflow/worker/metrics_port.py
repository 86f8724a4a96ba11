"""``pgflow worker --metrics-port``: the supervisor's HTTP endpoint.

``/metrics``: Prometheus text, every worker process's counters and histograms added up
(``prometheus_client`` multiprocess mode: each process writes its own files in a folder this
endpoint creates and removes), the supervisor's own gauges, and the queue gauges read from the
database at scrape time (:func:`pgflow.metrics.collect_queue_metrics`, in this process only).
``/healthz/live``, ``/healthz/ready`` and ``/healthz`` (both): JSON, 200 or 503.

Requests are served one at a time by the supervisor's main loop, between its turns, so no
thread ever exists in the process that forks (a thread holding a lock at a fork would leave it
locked in the child) and an answer proves that the loop turns. Each request is bounded: two
seconds to read it, and the database work behind it by a two-second connect timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .. import management, metrics, versions
from ..db.pool import Database
from ..errors import ConfigurationError, PgflowError
from ..health import READY_TIMEOUT, DatabaseCheck, check_database, with_statement_timeout

if TYPE_CHECKING:
    from ..management import QueueInfo, Stranded
    from ..settings import Settings
    from ..versions import VersionInfo

log = structlog.get_logger("pgflow")

# Seconds a client may take to send its request (the supervisor's loop waits meanwhile).
REQUEST_TIMEOUT = 2.0
# Milliseconds one statement of a scrape may run (the count by status reads the whole table):
# past it the scrape goes without the queue gauges rather than hold the loop.
SCRAPE_STATEMENT_TIMEOUT_MS = 5000


FOLDER_PREFIX = "pgflow-metrics-"


def _remove_stale_folders() -> None:
    """Remove the folders of supervisors that died without removing theirs (SIGKILL): each
    folder is named after its supervisor's pid."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class ProcessFacts:
    """What the supervisor knows of itself and its worker processes, for /healthz."""

    expected: int  # worker processes it keeps (-P)
    running: int  # forked and not yet reaped (replaced ones excluded)
    ready: int  # of those, past start-up
    silent_max_s: float  # longest silence of a ready process
    child_timeout: float  # silence after which the supervisor replaces a process
    loop_age_s: float  # seconds since the supervisor's loop last turned
    draining: bool


def judge(facts: ProcessFacts, db: DatabaseCheck) -> tuple[bool, bool, dict[str, Any]]:
    """(live, ready, the JSON body). Live: the loop turns and no ready worker process has been
    silent past the child timeout. Ready: live, not draining, a worker process ready, and the
    database answers."""
    live = (
        facts.loop_age_s < max(5.0, facts.child_timeout)
        and facts.silent_max_s <= facts.child_timeout
    )
    ready = live and not facts.draining and facts.ready > 0 and db.ok
    body = {
        "live": live,
        "ready": ready,
        "draining": facts.draining,
        "supervisor": {"loop_age_s": round(facts.loop_age_s, 3)},
        "processes": {
            "expected": facts.expected,
            "running": facts.running,
            "ready": facts.ready,
            "silent_max_s": round(facts.silent_max_s, 3),
            "child_timeout_s": facts.child_timeout,
        },
        "database": db.as_json(),
    }
    return live, ready, body


class _Queues:
    """The queue collector's source: the reports, on this endpoint's own small pool."""

    def __init__(self, db: Database, heartbeat_timeout: float) -> None:
        self.db = db
        self.heartbeat_timeout = heartbeat_timeout

    def queue_report(self) -> tuple[list[QueueInfo], list[Stranded]]:
        return management.queue_report(self.db, self.heartbeat_timeout)

    def versions(self) -> list[VersionInfo]:
        return versions.list_versions(self.db, self.heartbeat_timeout)


class _Guarded:
    """A collector that gives nothing, rather than fail the scrape, when the database does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        try:
            families = list(self.inner.collect())
        except PgflowError as exc:
            log.warning("metrics_queue_report_failed", error=str(exc))
            return iter(())
        return iter(families)


class _Supervisor:
    """The supervisor's own gauges."""

    def __init__(self, facts: ProcessFacts, db: DatabaseCheck) -> None:
        self.facts, self.db = facts, db

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "pgflow_database_up",
            "1 when the database answered SELECT 1 at this scrape.",
            value=1.0 if self.db.ok else 0.0,
        )
        yield GaugeMetricFamily(
            "pgflow_worker_processes",
            "Worker processes of this supervisor (forked, not reaped).",
            value=self.facts.running,
        )
        yield GaugeMetricFamily(
            "pgflow_worker_processes_ready",
            "Worker processes past start-up, claiming work.",
            value=self.facts.ready,
        )


class _Server(HTTPServer):
    endpoint: MetricsPort

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning(
            "metrics_request_failed", client=str(client_address[0]), error=repr(sys.exc_info()[1])
        )


class MetricsPort:
    """The listening socket, the multiprocess folder and the small pool behind them."""

    def __init__(
        self, settings: Settings, database_url: str, facts: Callable[[], ProcessFacts]
    ) -> None:
        if not metrics.available():
            raise ConfigurationError(
                "--metrics-port needs prometheus_client: pip install 'pgflow[metrics]'"
            )
        self.facts = facts
        self.heartbeat_timeout = settings.heartbeat_timeout
        try:
            self.server = _Server((settings.metrics_host, settings.metrics_port), _Handler)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {settings.metrics_host}:{settings.metrics_port} for "
                f"metrics ({exc.strerror or exc}); choose another --metrics-port"
            ) from None
        self.server.timeout = 0  # handle_request() only when select() said a client waits
        self.server.endpoint = self
        _remove_stale_folders()
        self.folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
        metrics.enable_multiprocess(self.folder)
        self.db = Database(
            with_statement_timeout(database_url, SCRAPE_STATEMENT_TIMEOUT_MS),
            settings.schema,
            max_size=1,
            connect_timeout=READY_TIMEOUT,
            application_name="pgflow:metrics",
        )
        where = f"http://{settings.metrics_host}:{self.port}"
        log.info(
            "metrics_listening",
            url=f"{where}/metrics",
            health=f"{where}/healthz",
            folder=self.folder,
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def fileno(self) -> int:
        return self.server.fileno()

    def serve_one(self) -> None:
        """Answer the client that select() saw waiting (errors are the client's own)."""
        try:
            self.server.handle_request()
        finally:
            # No pool (and no pool thread) is left open for the next fork.
            self.db.close()

    def process_exited(self, pid: int) -> None:
        metrics.process_exited(self.folder, pid)

    def close_in_child(self) -> None:
        """In a forked worker process: let go of the listening socket."""
        self.server.socket.close()

    def close(self) -> None:
        self.server.server_close()
        self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- answers -------------------------------------------------------------------------------

    def health(self, which: str) -> tuple[int, bytes]:
        live, ready, body = judge(self.facts(), check_database(self.db))
        ok = {"live": live, "ready": ready}.get(which, live and ready)
        body["status"] = "ok" if ok else "unavailable"
        return (200 if ok else 503), json.dumps(body).encode()

    def scrape(self, accept: str | None) -> tuple[bytes, str]:
        check = check_database(self.db)
        collectors: list[Any] = [_Supervisor(self.facts(), check)]
        if check.ok:
            source = _Queues(self.db, self.heartbeat_timeout)
            collectors.append(_Guarded(metrics.collect_queue_metrics(source)))
        return metrics.exposition(self.folder, *collectors, accept=accept)


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT
    server_version = "pgflow"

    def do_GET(self) -> None:
        endpoint: MetricsPort = self.server.endpoint  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics":
            body, content_type = endpoint.scrape(self.headers.get("Accept"))
            self._answer(200, body, content_type)
        elif path in ("/healthz", "/healthz/live", "/healthz/ready"):
            status, body = endpoint.health(path.rpartition("/")[2])
            self._answer(status, body, "application/json")
        else:
            self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics_request", request=format % args)
