"""First-week traps, each fixed or made impossible: async functions refused at declaration,
a broken task module reported in one line, partitioned spans that need their key, a burst
worker that does not wait in silence for delayed work, the server's reason for an unreachable
database, and a reset that names what it drops."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import pgflow
from pgflow.cli import main
from pgflow.queues import Queue
from pgflow.testing import Span, check_rows, use_database
from tests import logging_app
from tests.processes import Worker, clean_env, run_pgflow


def test_async_functions_are_refused_when_declared() -> None:
    app = pgflow.App("asyncs", database_url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(pgflow.ConfigurationError, match=r"async def.*workflow"):

        @app.workflow()
        async def flow() -> None: ...

    with pytest.raises(pgflow.ConfigurationError, match=r"async def.*step"):

        @app.step()
        async def step() -> None: ...

    with pytest.raises(pgflow.ConfigurationError, match=r"async def.*transaction"):

        @app.transaction()
        async def txn() -> None: ...

    assert not app.registry.workflows


@pytest.mark.parametrize(
    ("source", "line"),
    [
        (
            "import pgflow\napp = pgflow.App('b')\n\ndef f(:\n    pass\n",
            "cannot import tasks: SyntaxError at tasks.py:4: invalid syntax",
        ),
        (
            "import pgflow\n\nimport no_such_module_here\n",
            "cannot import tasks: ModuleNotFoundError at tasks.py:3: "
            "No module named 'no_such_module_here'",
        ),
        (
            "import pgflow\napp = pgflow.App('b')\nlimit = 1 / 0\n",
            "cannot import tasks: ZeroDivisionError at tasks.py:3: division by zero",
        ),
    ],
    ids=["syntax", "import", "runtime"],
)
def test_a_broken_task_module_is_one_line(tmp_path: Path, source: str, line: str) -> None:
    (tmp_path / "tasks.py").write_text(source)
    env = clean_env("postgresql://nobody@127.0.0.1:1/none")
    done = run_pgflow("worker", "-A", "tasks", "--burst", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"pgflow: {line}\n" and done.stdout == ""


def test_spans_on_a_partitioned_queue_need_their_key() -> None:
    q = Queue("parts", concurrency=1, partitioned=True)
    keyed = [Span(0.0, 1.0, "w1", partition_key="eu"), Span(0.5, 1.5, "w2", partition_key="us")]
    check_rows(q, [], spans=keyed)  # one at a time per key: fine
    with pytest.raises(pgflow.ConfigurationError, match=r"partition_key=.*w3"):
        check_rows(q, [], spans=[*keyed, Span(0.2, 0.3, "w3")])
    with pytest.raises(AssertionError, match="partition concurrency"):
        check_rows(q, [], spans=[*keyed, Span(0.2, 0.3, "w3", partition_key="eu")])


@pytest.fixture
def app(database_url: str) -> Iterator[pgflow.App]:
    with use_database(logging_app.app, database_url) as a:
        yield a


def test_burst_reports_delayed_work_and_exits(
    app: pgflow.App, database_url: str, tmp_path: Path
) -> None:
    logging_app.jobs.options(workflow_id="now-1").enqueue(logging_app.fine)
    logging_app.jobs.options(workflow_id="later-1", delay=600).enqueue(logging_app.fine)
    logging_app.jobs.options(workflow_id="later-2", delay=900).enqueue(logging_app.fine)
    worker = Worker(database_url, tmp_path, "--burst", "-P", "1", app="tests.logging_app")
    assert worker.wait(30) == 0, worker.stderr()[-3000:]
    [left] = worker.events("burst_delayed_work_left")
    assert left["workflows"] == 2 and 590 <= left["due_in_s"] <= 600
    assert left["next_due"] and "--burst-wait-delayed" in left["action"]
    assert [e["workflow_id"] for e in worker.events("workflow_succeeded")] == ["now-1"]
    # The summary line ends its line.
    assert "done: 1 done, 0 failed, 2 left" in worker.stderr()
    assert worker.stderr().split("done: 1 done")[1].split("\n")[0].endswith("jobs/s")

    waiting = Worker(
        database_url,
        tmp_path,
        "--burst",
        "-P",
        "1",
        "--burst-wait-delayed",
        app="tests.logging_app",
    )
    with pytest.raises(subprocess.TimeoutExpired):
        waiting.proc.wait(3)  # it waits for the delayed work, as asked
    waiting.kill()
    assert not waiting.events("burst_delayed_work_left")


def test_an_unreachable_database_gives_the_servers_reason(pg_server_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(pg_server_url)
    url = make_conninfo(
        "", **{**info, "user": "no_such_role_here", "password": "s3cret", "dbname": "x"}
    )
    result = CliRunner().invoke(
        main, ["workflows", "list"], env={"PGFLOW_DATABASE_URL": url, "PGFLOW_LOG_LEVEL": "warning"}
    )
    assert result.exit_code == 1
    assert 'role "no_such_role_here" does not exist' in result.output
    assert "s3cret" not in result.output


def test_reset_names_the_database_and_schema(database_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    db = conninfo_to_dict(database_url)["dbname"]
    env = {"PGFLOW_DATABASE_URL": database_url, "PGFLOW_LOG_LEVEL": "warning"}
    asked = CliRunner().invoke(main, ["reset"], input="n\n", env=env)
    assert asked.exit_code == 1
    assert "Drop schema 'pgflow' of database " in asked.output and f"/{db}," in asked.output
    done = CliRunner().invoke(main, ["reset", "--yes"], env=env)
    assert done.exit_code == 0, done.output
    assert done.output.startswith("dropped schema 'pgflow' of database ")
    assert done.output.rstrip().endswith(f"/{db}")
