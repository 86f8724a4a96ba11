"""The embedded server: started once, shared by processes of one home, stopped on request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgflow.db.embedded import start_embedded, stop_embedded
from pgflow.errors import DatabaseUnavailable
from tests.processes import ROOT, run_pgflow, run_python

pytestmark = pytest.mark.slow


@pytest.fixture
def home() -> Iterator[Path]:
    # Not pytest's tmp_path: as root the server's OS user must traverse every parent folder.
    path = Path(tempfile.mkdtemp(prefix="pgflow-embedded-"))
    yield path / "home"
    stop_embedded(path / "home")
    shutil.rmtree(path, ignore_errors=True)


def test_start_twice_shares_one_server_then_stop(home: Path) -> None:
    url = start_embedded(home)
    assert start_embedded(home) == url
    assert (home / "pgdata" / "PG_VERSION").exists()

    # Another process of the same project joins the same server.
    code = (
        "import sys; from pgflow.db.embedded import start_embedded; "
        "print(start_embedded(sys.argv[1]))"
    )
    other = run_python(code, str(home), timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip().splitlines()[-1] == url

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)

    stop_embedded(home)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    stop_embedded(home)  # stopping a stopped server is a no-op

    # Started again in the same process: the package's cache must not hand back the dead one.
    assert start_embedded(home) == url
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_relative_home_is_resolved(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home.mkdir(parents=True)
    monkeypatch.chdir(home.parent)
    url = start_embedded("home")
    assert str(home / "pgdata") in url


def test_unusable_home_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="PGFLOW_DATABASE_URL"):
        start_embedded(blocker / "home")


def test_cli_manages_the_projects_server_from_a_subfolder(home: Path) -> None:
    """`pgflow embedded status|stop` and the read-only commands find ./.pgflow from a
    subfolder and use the running server; a folder pgflow creates ignores itself in git."""
    project = home.parent / "project"
    pgflow_home = project / ".pgflow"
    (project / "sub").mkdir(parents=True)
    try:
        start_embedded(pgflow_home)
        assert (pgflow_home / ".gitignore").read_text() == "*\n"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLOW_")}
        env.update(PGFLOW_LOG_LEVEL="warning", PYTHONPATH=str(ROOT))

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_pgflow(*args, env=env, cwd=project / "sub", timeout=120)

        status = cli("embedded", "status", "--json")
        assert status.returncode == 0, status.stderr
        found = json.loads(status.stdout)
        assert found["running"] and found["home"] == str(pgflow_home.resolve())
        assert (cli("migrate").returncode, cli("queues", "--json").returncode) == (0, 0)
        assert json.loads(cli("workflows", "list", "--json").stdout) == []
        assert not (project / "sub" / ".pgflow").exists()
        stopped = cli("embedded", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert cli("embedded", "status").returncode == 3
        refused = cli("queues")
        assert refused.returncode == 1 and "no database found" in refused.stderr
    finally:
        stop_embedded(pgflow_home)
