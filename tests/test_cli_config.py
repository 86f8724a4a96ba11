"""Operator commands take the app's configuration (-A) and never start a server to read
(issue 13, item 5). Real subprocesses, in a project folder of their own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pgflow
from pgflow.db.migrate import migrate
from pgflow.db.pool import Database
from tests.processes import ROOT, run_pgflow


def pgflow_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PGFLOW_") or k.startswith("PGFLOW_TEST")
    }
    clean.update(
        env,
        PGFLOW_LOG_LEVEL="warning",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(cwd.parent), str(cwd)]),
    )
    return run_pgflow(*args, env=clean, cwd=cwd, timeout=120)


def make_project(tmp_path: Path, database_url: str, schema: str) -> Path:
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "proj_tasks.py").write_text(
        "import pgflow\n"
        f"app = pgflow.App('proj', database_url={database_url!r}, schema={schema!r},\n"
        "                  app_version='proj-v1')\n"
        "orders = app.queue('orders')\n\n"
        "@app.workflow(name='proj.order')\n"
        "def order(n: int) -> int:\n"
        "    return n\n"
    )
    return project


def test_operator_commands_take_the_apps_url_and_schema(tmp_path: Path, database_url: str) -> None:
    migrate(Database(database_url, "projschema"))
    project = make_project(tmp_path, database_url, "projschema")
    app = pgflow.App("proj", database_url=database_url, schema="projschema", app_version="proj-v1")
    try:
        orders = app.queue("orders")

        @app.workflow(name="proj.order")
        def order(n: int) -> int:
            return n

        orders.options(workflow_id="o1").enqueue(order, 1)
    finally:
        app.shutdown(timeout=5)

    for cwd in (project, project / "sub"):  # from a subfolder too
        queues = pgflow_cli(cwd, "queues", "-A", "proj_tasks", "--json")
        assert queues.returncode == 0, queues.stderr
        assert [q["name"] for q in json.loads(queues.stdout)["queues"]] == ["orders"]
        listed = pgflow_cli(cwd, "workflows", "list", "-A", "proj_tasks", "--json")
        assert [w["workflow_id"] for w in json.loads(listed.stdout)] == ["o1"]
        shown = pgflow_cli(cwd, "workflows", "show", "o1", "--app", "proj_tasks")
        assert shown.returncode == 0 and "proj.order" in shown.stdout
    # PGFLOW_APP says the same; a flag actually given wins over the app's setting.
    assert (
        pgflow_cli(project, "workflows", "cancel", "o1", PGFLOW_APP="proj_tasks").stdout.strip()
        == "o1: CANCELLED"
    )
    enq = pgflow_cli(
        project,
        "enqueue",
        "orders",
        "proj.order",
        "[2]",
        "-A",
        "proj_tasks",
        "--app-version",
        "proj-v1",
        "--workflow-id",
        "o2",
    )
    assert (enq.returncode, enq.stdout.strip()) == (0, "o2"), enq.stderr
    other = pgflow_cli(
        project, "workflows", "list", "-A", "proj_tasks", "--schema", "pgflow", "--json"
    )
    assert json.loads(other.stdout) == []
    # Nothing was started or created in the project.
    assert not (project / ".pgflow").exists() and not (project / "sub" / ".pgflow").exists()


def test_read_only_commands_never_start_an_embedded_server(tmp_path: Path) -> None:
    for args in (
        ("queues",),
        ("workflows", "list"),
        ("workflows", "show", "x"),
        ("workflows", "cancel", "x"),
    ):
        done = pgflow_cli(tmp_path, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "no database found" in done.stderr
        assert "--database-url" in done.stderr and "PGFLOW_DATABASE_URL" in done.stderr
        assert "-A" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no .pgflow folder, no server


def test_embedded_status_of_a_home_with_no_server(tmp_path: Path) -> None:
    status = pgflow_cli(tmp_path, "embedded", "status")
    assert status.returncode == 3 and "not created" in status.stdout
    assert (
        json.loads(pgflow_cli(tmp_path, "embedded", "status", "--json").stdout)["running"] is False
    )
    stop = pgflow_cli(tmp_path, "embedded", "stop")
    assert stop.returncode == 0 and "no embedded server runs" in stop.stdout
    assert list(tmp_path.iterdir()) == []
