"""The dashboard's /metrics and /healthz over real HTTP (uvicorn on a thread): the queue gauges
read from the database, health with the database up and away, open without the admin token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
parser = pytest.importorskip("prometheus_client.parser")

import pgflow  # noqa: E402
from pgflow.dashboard import create_app  # noqa: E402
from tests.inprocess import running_worker  # noqa: E402
from tests.serving import serving  # noqa: E402

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (by lower-case name) and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_reads_the_queues_and_needs_no_admin(database_url: str) -> None:
    app = pgflow.App("probes", database_url=database_url, app_version="p-1")
    app.queue("mail", concurrency=3, rate_limit=pgflow.Rate(10, per=60.0))

    @app.workflow(name="notify")
    def notify(n: int) -> int:
        return n

    try:
        with pgflow.Client(database_url) as client:
            client.pause_queue("mail")  # so that the worker below claims none of them
            with running_worker(app, "mail"):  # declares the queue's limits, a live executor
                for n in range(3):
                    client.enqueue("mail", "notify", n)
                client.enqueue("mail", "notify", 9, delay=600)
                with serving(create_app(database_url, admin_token="t0ken")) as base:
                    status, headers, text = get(base + "/metrics")
                    found = samples(text)
                    post = urllib.request.Request(base + "/metrics", method="POST", data=b"")
                    with pytest.raises(urllib.error.HTTPError) as refused:
                        urllib.request.urlopen(post, timeout=10)
    finally:
        app.shutdown(timeout=5)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert headers["cache-control"] == "no-store"
    mail = (("queue", "mail"),)
    assert found[("pgflow_queue_enqueued", mail)] == 4
    assert found[("pgflow_queue_delayed", mail)] == 1
    assert found[("pgflow_queue_running", mail)] == 0
    assert found[("pgflow_queue_paused", mail)] == 1
    assert found[("pgflow_queue_concurrency", mail)] == 3
    assert found[("pgflow_queue_rate_limit", mail)] == 10
    assert found[("pgflow_queue_rate_window_starts", mail)] == 0
    assert found[("pgflow_queue_oldest_wait_seconds", mail)] >= 0
    assert found[("pgflow_queue_live_workers", mail)] == 1
    assert found[("pgflow_workflows", (("status", "ENQUEUED"),))] == 4
    assert found[("pgflow_workflows", (("status", "SUCCESS"),))] == 0
    assert found[("pgflow_version_live_executors", (("app_version", "p-1"),))] == 1
    assert found[("pgflow_live_executors", ())] == 1
    assert found[("pgflow_database_up", ())] == 1
    # the database-wide gauges only: not this process's registry (its Python collectors)
    assert not [name for name, _ in found if not name.startswith("pgflow_")]
    assert refused.value.code == 405


def test_healthz_with_the_database_up_and_away(database_url: str) -> None:
    with serving(create_app(database_url, admin_token="t0ken")) as base:
        status, headers, text = get(base + "/healthz")
        assert status == 200 and headers["content-type"] == "application/json"
        body = json.loads(text)
        assert body["live"] is True and body["ready"] is True and body["status"] == "ok"
        assert body["database"]["ok"] is True and body["database"]["seconds"] < 2
        assert get(base + "/healthz/ready")[0] == 200
        assert get(base + "/healthz/live")[0] == 200
        assert get(base + "/healthz/nope")[0] == 404

    # Nothing listens on port 1: the dashboard is live, not ready, and says why.
    away = "postgresql://pgflow:secret-pw@127.0.0.1:1/none?connect_timeout=2"
    with serving(create_app(away)) as base:
        status, _, text = get(base + "/healthz")
        body = json.loads(text)
        assert status == 503 and body["live"] is True and body["ready"] is False
        assert body["status"] == "unavailable" and body["database"]["error"]
        assert "secret-pw" not in text
        assert get(base + "/healthz/ready")[0] == 503
        live_status, _, live = get(base + "/healthz/live")
        assert live_status == 200 and json.loads(live) == {"live": True, "status": "ok"}
        status, _, text = get(base + "/metrics")
        found: dict[Any, float] = samples(text)
        assert status == 200 and found == {("pgflow_database_up", ()): 0.0}
