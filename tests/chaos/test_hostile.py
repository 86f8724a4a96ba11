"""Bad input and hostile callers: unknown names, values JSON cannot hold, bad URLs and
passwords, injection-shaped names, pickled rows in a JSON app, least-privilege roles, and two
apps side by side in one database. Fast: seconds each."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import pgflow
from pgflow.db.migrate import migrate
from pgflow.db.pool import Database
from tests.chaos import chaos_app
from tests.chaos.harness import HEARTBEAT, query
from tests.processes import clean_env, cpu_seconds, run_pgflow, wait_for

pytestmark = [pytest.mark.chaos]

CANARY = "CanaryPassw0rd"
FIVE = chaos_app.five.__pgflow_workflow__.name  # type: ignore[attr-defined]


def cli(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = clean_env(url, {"PGFLOW_LOG_FORMAT": "json", **(env or {})})
    return run_pgflow(*args, env=environ, timeout=timeout)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# -- unknown names -----------------------------------------------------------------------------


def test_unknown_workflow_name_waits_without_a_hot_loop(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    """A Client enqueues a name no worker knows: it stays ENQUEUED; a --burst worker exits 0
    without claiming it; a running worker does not spin on it; `pgflow queues` shows it."""
    with pgflow.Client(chaos_url) as client:
        h = client.enqueue("chaos", "no.such.workflow", 1, app_version=capp.app_version)
    burst = workers("-P", "1", "-c", "2", *HEARTBEAT, "--burst")
    assert burst.wait(30) == 0, burst.stderr()[-2000:]
    w = workers("-P", "1", "-c", "2", *HEARTBEAT, "--poll-interval", "0.1")
    # The worker process is the child that registered: importing pgflow may run a short-lived
    # helper process (croniter's `file -b`) beside it, so the first child is not always it.
    child = wait_for(
        "the registered worker process",
        lambda: [
            r["pid"]
            for r in query(chaos_url, "SELECT pid FROM pgflow.executors")
            if r["pid"] in w.children()
        ],
        30,
    )[0]
    cpu0, t0 = cpu_seconds(child), time.monotonic()
    time.sleep(3.0)
    busy = (cpu_seconds(child) - cpu0) / (time.monotonic() - t0)
    row = query(
        chaos_url,
        "SELECT status, executor_id, attempt FROM pgflow.workflow_status WHERE workflow_id = %s",
        (h.workflow_id,),
    )[0]
    report = cli("queues", "--json", url=chaos_url)
    chaos_q = next(q for q in json.loads(report.stdout)["queues"] if q["name"] == "chaos")
    print(
        f"\nunknown name: {row}; idle worker CPU {busy:.1%} at a 0.1 s poll; queue report "
        f"enqueued={chaos_q['enqueued']} oldest_wait={chaos_q['oldest_wait_s']:.1f}s"
    )
    assert row == {"status": "ENQUEUED", "executor_id": None, "attempt": 0}
    assert busy < 0.25
    assert chaos_q["enqueued"] == 1 and chaos_q["oldest_wait_s"] > 3


# -- values JSON cannot hold -------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    "bad, where",
    [
        ({1, 2}, "args[0]"),
        (Opaque(), "args[0]"),
        (lambda: 1, "args[0]"),
        (math.nan, "args[0]"),
        ("nul\x00byte", "args[0]"),
        ("x" * 5000, "inputs"),
    ],
    ids=["set", "object", "lambda", "nan", "nul", "too-big"],
)
def test_unserializable_arguments_fail_before_any_row(
    capp: pgflow.App, chaos_url: str, bad: Any, where: str
) -> None:
    capp.settings = capp.settings.replace(max_payload_bytes=4096)
    enqueues: list[Callable[[], object]] = [
        lambda: chaos_app.chaos.enqueue(chaos_app.five, bad, 0.0),
        lambda: chaos_app.chaos.options(dedup_id="d").enqueue(chaos_app.five, i=bad, work=0.0),
        lambda: capp.start(chaos_app.five, bad, 0.0),
    ]
    for enqueue in enqueues:
        with pytest.raises(pgflow.PgflowError) as info:
            enqueue()
        assert isinstance(info.value, TypeError) or "inputs" in str(info.value)
    with (
        pgflow.Client(chaos_url, settings=capp.settings) as client,
        pytest.raises(pgflow.PgflowError) as info,
    ):
        client.enqueue("chaos", FIVE, bad, 0.0, app_version="v")
    message = str(info.value)
    print(f"\n{type(bad).__name__}: {message[:160]}")
    assert where in message or "argument" in message
    assert query(chaos_url, "SELECT count(*) AS n FROM pgflow.workflow_status")[0]["n"] == 0


def test_unserializable_step_output_fails_naming_the_step(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    h = chaos_app.chaos.enqueue(chaos_app.unknown_output)
    w = workers("-P", "1", "-c", "1", *HEARTBEAT, "--burst")
    assert w.wait(30) == 0, w.stderr()[-2000:]
    with pytest.raises(pgflow.PgflowError) as info:
        h.result(timeout=5)
    print(f"\nstep output: {str(info.value)[:200]}")
    assert "emit_set" in str(info.value)
    assert h.status().status == pgflow.Status.ERROR


# -- URLs and passwords ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{CANARY}@127.0.0.1:1/x",  # nothing listens
        f"postgresql://u:{CANARY}@[::1:5432/x",  # malformed
        f"postgresql://u:{CANARY}@127.0.0.1:5432/x?sslmode=bogus",  # invalid option
        f"host=127.0.0.1 port=1 password={CANARY} dbname=x",  # key=value, refused
    ],
    ids=["refused", "malformed", "bad-option", "keyword-form"],
)
def test_bad_url_one_line_no_fork_no_password(url: str, workers: Any) -> None:
    w = workers("-P", "2", "--burst", url=url)
    code = w.wait(60)
    err, out = w.stderr(), w.stdout()
    print(f"\nbad URL -> exit {code}: {err.strip()[:200]}")
    assert code != 0
    assert len(lines(err)) == 1, err
    assert CANARY not in err + out
    assert not w.events("worker_process_started")


def test_password_never_shown(capp: pgflow.App, chaos_url: str, workers: Any) -> None:
    """A URL with a password (the local server trusts 127.0.0.1, so any password works):
    the worker's logs, `workflows show`, `pgflow queues` and pg_stat_activity's
    application_name never carry it."""
    info = psycopg.conninfo.conninfo_to_dict(chaos_url)
    url = f"postgresql://{info.get('user') or 'postgres'}:{CANARY}@127.0.0.1:5432/{info['dbname']}"
    h = chaos_app.chaos.enqueue(chaos_app.five, 1, 0.0)
    w = workers("-P", "1", "-c", "2", *HEARTBEAT, url=url)
    assert h.result(timeout=30) == chaos_app.five_result(1)
    names = [
        r["application_name"]
        for r in query(
            chaos_url,
            "SELECT application_name FROM pg_stat_activity WHERE datname = %s",
            (info["dbname"],),
        )
    ]
    shown = cli("workflows", "show", h.workflow_id, url=url)
    shown_json = cli("workflows", "show", "--json", h.workflow_id, url=url)
    queues = cli("queues", url=url)
    missing = cli("workflows", "show", "no-such-id", url=url)
    w.kill()
    everything = "\n".join(
        [
            w.stderr(),
            w.stdout(),
            shown.stdout,
            shown.stderr,
            shown_json.stdout,
            queues.stdout,
            missing.stderr,
            *names,
        ]
    )
    print(
        f"\napplication names {sorted(set(names))}; banner database "
        f"{w.events('worker_starting')[0]['database']}"
    )
    assert shown.returncode == 0 and missing.returncode == 1
    assert CANARY not in everything
    assert "127.0.0.1:5432" in w.events("worker_starting")[0]["database"]


# -- hostile names -----------------------------------------------------------------------------

HOSTILE = st.one_of(
    st.sampled_from(
        [
            "'",
            '"',
            "';--",
            "'; DROP TABLE pgflow.workflow_status;--",
            "$$",
            "\\",
            "%s",
            "%(x)s",
            "{schema}",
            "🎉🔥",
            "a\x00b",
            "x" * 10_000,
            "",
            " ",
            "\n",
            "NULL",
            "\u202e",
            "ʼ",
        ]
    ),
    st.text(min_size=0, max_size=60),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(queue=HOSTILE, name=HOSTILE, key=HOSTILE, dedup=HOSTILE)
def test_hostile_names_round_trip_or_are_refused(
    chaos_url: str, queue: str, name: str, key: str, dedup: str
) -> None:
    """Queue, workflow, partition and dedup names of any shape: stored and read back
    exactly, or refused with ConfigurationError; never a raw database error."""
    with pgflow.Client(chaos_url) as client:
        for probe in (
            lambda: client.retrieve(name),
            lambda: client.cancel(dedup),
            lambda: client.list_workflows(queue=queue, name=name, limit=1),
            lambda: client.steps(key),
            lambda: client.send(name, key, topic=dedup),
        ):
            with contextlib.suppress(
                pgflow.UnknownWorkflow, pgflow.ConfigurationError, pgflow.SerializationError
            ):
                probe()
        try:
            h = client.enqueue(
                queue, name, 1, partition_key=key, dedup_id=dedup, app_version="hostile"
            )
        except pgflow.ConfigurationError:
            return
        except pgflow.Deduplicated:
            return  # the same (queue, dedup id) drawn twice
        st_ = h.status()
        assert (st_.queue_name, st_.name, st_.partition_key, st_.dedup_id) == (
            queue,
            name,
            key,
            dedup,
        )
        assert (
            client.list_workflows(queue=queue, name=name, limit=1, newest_first=True)[0].workflow_id
            == h.workflow_id
        )
        client.cancel(h.workflow_id)
        assert client.retrieve(h.workflow_id).status().status == pgflow.Status.CANCELLED


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=HOSTILE)
def test_hostile_queue_names_in_the_app(capp: pgflow.App, name: str) -> None:
    try:
        q = capp.queue(f"h{name}")
    except pgflow.ConfigurationError:
        return
    try:
        h = q.options(dedup_id=name or "x").enqueue(chaos_app.five, 1, 0.0)
    except (pgflow.ConfigurationError, pgflow.Deduplicated):
        return
    finally:
        capp.queues.pop(f"h{name}", None)
    assert h.status().queue_name == f"h{name}"


@pytest.mark.parametrize(
    "schema", ['a"; DROP SCHEMA pgflow CASCADE; --', "Pgflow", "1x", "x" * 64, "sch-ema", "🎉", ""]
)
def test_hostile_schema_refused_before_connecting(schema: str) -> None:
    started = time.monotonic()
    with pytest.raises(pgflow.ConfigurationError):
        pgflow.App("x", schema=schema, database_url="postgresql://127.0.0.1:1/x")
    with pytest.raises(pgflow.ConfigurationError):
        pgflow.Client("postgresql://127.0.0.1:1/x", schema=schema)
    out = cli("queues", "--schema", schema, url="postgresql://127.0.0.1:1/x")
    assert out.returncode != 0
    assert "schema" in out.stderr and "connect" not in out.stderr.lower()
    assert time.monotonic() - started < 10


# -- pickle ------------------------------------------------------------------------------------


def test_json_app_refuses_a_pickled_row(capp: pgflow.App, chaos_url: str, workers: Any) -> None:
    """A pickled row in a JSON app's queue (written by a pickle-configured client): reading it
    is refused with a message saying why, and a worker ends it ERROR with that refusal
    instead of unpickling it (or leaving it stuck)."""
    with pgflow.Client(chaos_url, serializer="pickle") as client:
        h = client.enqueue("chaos", FIVE, 7, 0.0, app_version=capp.app_version)
    shown = capp.retrieve(h.workflow_id).status().inputs
    assert isinstance(shown, str) and "not decodable" in shown and "pickle" in shown
    w = workers("-P", "1", "-c", "2", *HEARTBEAT, "--burst")
    assert w.wait(30) == 0, w.stderr()[-2000:]
    row = query(
        chaos_url,
        "SELECT status, error FROM pgflow.workflow_status WHERE workflow_id = %s",
        (h.workflow_id,),
    )[0]
    print(f"\npickled row in a JSON app: {row['status']}: {str(row['error'])[:160]}")
    assert row["status"] == "ERROR" and "pickle" in row["error"]


# -- least privilege ---------------------------------------------------------------------------


@pytest.fixture
def runtime_role(pg_server_url: str, fresh_database_url: str) -> Any:
    name = f"pgflow_rt_{os.getpid()}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    for url in (fresh_database_url, pg_server_url):  # its grants live in the test database
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def as_role(url: str, role: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    return (
        f"postgresql://{role}@{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}"
        f"/{info['dbname']}"
    )


def test_migrate_grant_then_worker_as_runtime_role(
    fresh_database_url: str, runtime_role: str, workers: Any
) -> None:
    role_url = as_role(fresh_database_url, runtime_role)
    # Unmigrated: the runtime role is told what to run, in one line, nothing forked.
    w = workers("-P", "1", "--burst", url=role_url)
    assert w.wait(60) != 0
    assert len(lines(w.stderr())) == 1 and "pgflow migrate" in w.stderr(), w.stderr()
    assert not w.events("worker_process_started")
    out = cli("migrate", "--grant", runtime_role, url=fresh_database_url)
    assert out.returncode == 0, out.stderr
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(chaos_app.TABLES)
        conn.execute(
            sql.SQL("GRANT ALL ON public.ledger, public.ledger_id_seq TO {}").format(
                sql.Identifier(runtime_role)
            )
        )
    app = chaos_app.app
    app.close_db()
    saved = app.settings
    app.settings = app.settings.replace(database_url=role_url)
    try:
        hs = [chaos_app.chaos.enqueue(chaos_app.five, i, 0.0) for i in range(5)]
        w2 = workers("-P", "1", "-c", "2", *HEARTBEAT, "--burst", url=role_url)
        assert w2.wait(60) == 0, w2.stderr()[-2000:]
        assert [h.result(timeout=5) for h in hs] == [chaos_app.five_result(i) for i in range(5)]
    finally:
        app.close_db()
        app.settings = saved
    ddl = query(
        fresh_database_url,
        "SELECT has_schema_privilege(%s, 'pgflow', 'CREATE') AS c",
        (runtime_role,),
    )[0]["c"]
    assert ddl is False


# -- two apps, two schemas ---------------------------------------------------------------------


def test_two_schemas_never_see_each_others_work(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    """Schema B holds work on the same queue names: a worker for schema A (the default)
    runs A's and leaves B's untouched, and B's NOTIFYs do not wake it."""
    migrate(Database(chaos_url, "app_b"))
    with pgflow.Client(chaos_url, schema="app_b") as b:
        b_ids = [
            b.enqueue("chaos", FIVE, i, 0.0, app_version=capp.app_version).workflow_id
            for i in range(5)
        ]
    a = [chaos_app.chaos.enqueue(chaos_app.five, i, 0.0) for i in range(5)]
    w = workers("-P", "1", "-c", "2", *HEARTBEAT, "--burst")
    assert w.wait(60) == 0, w.stderr()[-2000:]
    assert [h.result(timeout=5) for h in a] == [chaos_app.five_result(i) for i in range(5)]
    rows = query(
        chaos_url,
        "SELECT status, executor_id, attempt FROM app_b.workflow_status "
        "WHERE workflow_id = ANY(%s)",
        (b_ids,),
    )
    assert rows == [{"status": "ENQUEUED", "executor_id": None, "attempt": 0}] * 5
    assert query(chaos_url, "SELECT count(*) AS n FROM app_b.executors")[0]["n"] == 0
    assert query(chaos_url, "SELECT count(*) AS n FROM app_b.operation_outputs")[0]["n"] == 0
