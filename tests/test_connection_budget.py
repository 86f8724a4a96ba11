"""Connections: each process's budget is bounded and settable, idle sessions go back to the
server, the first use waits out an outage like every later one, and a connection that cannot
be had is explained by the server's own reason (never with the password).

On private clusters (tests/private_cluster.py): these tests set max_connections, stop the
server and change pg_hba.conf, which no test may do to a server it did not start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow.db.migrate import migrate
from pgflow.db.pool import Database
from tests import worker_app
from tests.private_cluster import Cluster, start_private_cluster
from tests.processes import Worker, run_pgflow

CANARY = "pw-CANARY-7f3a"  # a password that must never appear in a message
APP_NAME = "pgflow:worker-tests"  # the application_name of tests.worker_app's sessions
MAX_CONNECTIONS = 25  # 3 of them reserved for superusers: 22 for the role `app`


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A server with max_connections=25; database `budget` owned by the role `app` (trusted
    on 127.0.0.1, any password accepted); the role `alice` must give her password (scram)."""
    c = start_private_cluster(max_connections=MAX_CONNECTIONS, password_encryption="scram-sha-256")
    try:
        with psycopg.connect(c.url, autocommit=True) as admin:
            admin.execute("CREATE ROLE app LOGIN")
            admin.execute(f"CREATE ROLE alice LOGIN PASSWORD '{CANARY}'")
            admin.execute("CREATE DATABASE budget OWNER app")
        c.hba("host all alice 127.0.0.1/32 scram-sha-256")
        c.reload()
        url = c.url_for("budget", "app")
        migrate(Database(url, "pgflow"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(worker_app.TABLES)
        yield c
    finally:
        c.remove()


def app_url(cluster: Cluster, password: str | None = None) -> str:
    return cluster.url_for("budget", "app", password)


def sessions(cluster: Cluster, name: str = APP_NAME) -> int:
    with psycopg.connect(cluster.url, autocommit=True) as conn:  # superuser: a reserved slot
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_done(cluster: Cluster, n: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # As the superuser (a reserved slot): the worker may fill the others while busy.
        with psycopg.connect(cluster.url_for("budget"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pgflow.workflow_status WHERE status = 'SUCCESS'"
            ).fetchone()
        if row is not None and row[0] >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"{n} workflows not done within {timeout}s")


@pytest.fixture
def enqueue(cluster: Cluster) -> Iterator[Any]:
    """``enqueue(n, seconds)``: queue n timed workflows on tests.worker_app's `plain` queue
    (the table emptied first); the App lets go of its connections afterwards."""
    app = worker_app.app
    saved = app.settings

    def go(n: int, seconds: float) -> None:
        with psycopg.connect(app_url(cluster), autocommit=True) as conn:
            conn.execute("TRUNCATE pgflow.workflow_status CASCADE")
        app.close_db()
        app.settings = saved.replace(database_url=app_url(cluster))
        worker_app.plain.enqueue_many(
            worker_app.timed, [(f"job-{i}", None, seconds) for i in range(n)]
        )
        app.close_db()

    yield go
    app.close_db()
    app.settings = saved


class Sampler(threading.Thread):
    """Counts the worker's sessions every 20 ms; ``peak`` is the most seen at once."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster, self.peak, self.stop = cluster, 0, threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.cluster.url, autocommit=True) as conn:
            while not self.stop.wait(0.02):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)


def test_idle_sessions_go_back_to_the_server(
    cluster: Cluster, enqueue: Any, tmp_path: Path
) -> None:
    """`-P 2 -c 32` on a server of 22 ordinary slots: once the work is done, its idle
    sessions go back within the idle timeout and every other client connects again."""
    enqueue(300, 0.05)
    w = Worker(
        app_url(cluster),
        tmp_path,
        "-P",
        "2",
        "-c",
        "32",
        "-Q",
        "plain",
        env={"PGFLOW_POOL_IDLE_TIMEOUT": "2"},
    )
    sampler = Sampler(cluster)
    sampler.start()
    try:
        wait_done(cluster, 300, 120)
        done = time.monotonic()
        time.sleep(5.0)
        held = sessions(cluster)
        print(
            f"\n-P 2 -c 32: peak {sampler.peak} sessions; {held} held 5 s after the work "
            f"was done ({time.monotonic() - done:.1f} s)"
        )
        # Per process: the LISTEN session and the claim loop's one (the heartbeat may
        # overlap it now and then).
        assert held <= 2 * 3, held
        # Another client of the same role finds a slot, and the CLI works.
        client = pgflow.Client(app_url(cluster))
        try:
            assert len(client.list_workflows(limit=5)) == 5
        finally:
            client.close()
        queues = run_pgflow("queues", "--database-url", app_url(cluster))
        assert queues.returncode == 0, queues.stderr
    finally:
        sampler.stop.set()
        w.kill()


def test_pool_size_bounds_the_sessions_of_a_process(
    cluster: Cluster, enqueue: Any, tmp_path: Path
) -> None:
    """--pool-size 3 with 16 threads: the threads share 3 sessions (none ever holds two, so
    they cannot deadlock), plus the two LISTEN sessions (new work; cancels and messages for
    the running workflows): 5 in all, as the README's budget says, and all the work is done."""
    enqueue(150, 0.05)
    sampler = Sampler(cluster)
    sampler.start()
    w = Worker(app_url(cluster), tmp_path, "-P", "1", "-c", "16", "--pool-size", "3", "-Q", "plain")
    try:
        wait_done(cluster, 150, 120)
        sampler.stop.set()
        sampler.join(5)
        print(f"\n-P 1 -c 16 --pool-size 3: peak {sampler.peak} sessions")
        assert 1 < sampler.peak <= 3 + 2, sampler.peak
        banner = w.events("worker_starting")
        assert banner and banner[0]["pool_size"] == 3
    finally:
        sampler.stop.set()
        w.kill()


def test_a_full_server_is_named_as_the_reason(cluster: Cluster) -> None:
    """Every ordinary slot taken: the pool's error says the server is full (its own words),
    names the host, port and database, and never the password; so does the CLI, at once."""
    hogs: list[psycopg.Connection[Any]] = []
    try:
        while True:
            try:
                hogs.append(psycopg.connect(app_url(cluster)))
            except psycopg.OperationalError:
                break
            assert len(hogs) <= MAX_CONNECTIONS
        db = Database(app_url(cluster, CANARY), "pgflow", connect_timeout=1)
        try:
            with pytest.raises(pgflow.DatabaseUnavailable) as caught:
                db.fetchone("clock_now")
        finally:
            db.close()
        message = str(caught.value)
        print(f"\nfull, {len(hogs)} slots taken: {message}")
        assert "too many clients" in message or "connection slots are reserved" in message
        assert f"127.0.0.1:{cluster.port}/budget" in message
        assert "max_connections" in message and CANARY not in message

        began = time.monotonic()
        cli = run_pgflow("queues", "--database-url", app_url(cluster, CANARY))
        took = time.monotonic() - began
        print(f"pgflow queues: exit {cli.returncode} after {took:.1f}s: {cli.stderr.strip()}")
        assert cli.returncode == 1 and took < 10
        assert "too many clients" in cli.stderr or "connection slots are reserved" in cli.stderr
        assert f"127.0.0.1:{cluster.port}" in cli.stderr and CANARY not in cli.stderr
    finally:
        for conn in hogs:
            conn.close()


@pytest.mark.parametrize("what", ["wrong password", "unknown database"])
def test_a_refusal_fails_at_once_with_the_servers_reason(cluster: Cluster, what: str) -> None:
    """A wrong password or database name is not an outage: the App's first use fails at
    once (no waiting out a retry) with the server's reason, the host, and no password."""
    if what == "wrong password":
        url, reason = (
            cluster.url_for("budget", "alice", "not-" + CANARY),
            'password authentication failed for user "alice"',
        )
    else:
        url, reason = cluster.url_for("nosuch", "app", CANARY), 'database "nosuch" does not exist'
    app = pgflow.App("refused", database_url=url)
    began = time.monotonic()
    with pytest.raises(pgflow.ConnectionRejected) as caught:
        app.list_workflows()
    took = time.monotonic() - began
    message = str(caught.value)
    print(f"\n{what}: {took:.2f}s: {message}")
    assert took < 3
    assert reason in message and f"127.0.0.1:{cluster.port}" in message
    assert CANARY not in message
    assert isinstance(caught.value, pgflow.DatabaseError)
    # Through the pool alone (no direct connection first), the reason is the same.
    db = Database(url, "pgflow", connect_timeout=1)
    try:
        with pytest.raises(pgflow.ConnectionRejected) as pooled:
            db.fetchone("clock_now")
    finally:
        db.close()
    assert reason in str(pooled.value) and CANARY not in str(pooled.value)


def test_first_use_waits_out_an_outage(tmp_path: Path) -> None:
    """An App's and a Client's first use, made while the server is down, succeed once it is
    back: the first use retries like every later one (not only after a first success)."""
    c = start_private_cluster()
    try:
        migrate(Database(c.url, "pgflow"))
        c.stop()
        results: dict[str, Any] = {}

        def first_use(name: str, call: Any) -> None:
            began = time.monotonic()
            try:
                results[name] = (call(), time.monotonic() - began)
            except BaseException as exc:  # reported by the assertions below
                results[name] = (exc, time.monotonic() - began)

        app = pgflow.App("outage", database_url=c.url)
        threads = [
            threading.Thread(target=first_use, args=("app", app.list_workflows)),
            threading.Thread(
                target=first_use, args=("client", lambda: pgflow.Client(c.url).list_workflows())
            ),
        ]
        for t in threads:
            t.start()
        # Longer than psycopg_pool's first three reconnection delays (1 + 2 + 4 s) add up
        # to, so a pool alone would still be backing off when the server returns.
        time.sleep(8.5)
        c.start()
        for t in threads:
            t.join(60)
        print(f"\nfirst use during an 8.5 s outage: {results}")
        for name in ("app", "client"):
            value, took = results[name]
            assert value == [], f"{name}: {value!r}"
            assert took >= 8.5
        app.close_db()
    finally:
        c.remove()
