"""The embedded server: started once, shared by processes of one home, stopped on request."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgflow.db.embedded import start_embedded, stop_embedded
from pgflow.errors import DatabaseUnavailable

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
    other = subprocess.run(
        [sys.executable, "-c", code, str(home)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
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
