"""The one place where psycopg errors become pgflow errors.

The constraint or SQLSTATE picks the precise error; every message says what to do and never
contains a password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg
from psycopg import errors as pgerrors

from ..errors import (
    ConfigurationError,
    ConnectionRejected,
    DatabaseError,
    DatabaseUnavailable,
    Deduplicated,
    PermissionDenied,
    SchemaNotMigrated,
)
from ..redaction import redact

DEDUP_CONSTRAINT = "workflow_status_dedup_active"
ID_CONSTRAINT = "workflow_status_pkey"


def is_id_taken(exc: BaseException) -> bool:
    """Is ``exc`` an INSERT finding a workflow id already in workflow_status?"""
    return (
        isinstance(exc, pgerrors.UniqueViolation)
        and getattr(exc.diag, "constraint_name", None) == ID_CONSTRAINT
    )


def describe_target(url: str) -> str:
    """``host:port/dbname`` of a connection string, for messages (no user, no password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    host = str(info.get("host") or "localhost")
    port = str(info.get("port") or "5432")
    return f"{host}:{port}/{info.get('dbname') or ''}"


def is_connection_error(exc: BaseException) -> bool:
    """True when the connection itself failed (the statement may be retried on a new one)."""
    if isinstance(exc, (pgerrors.AdminShutdown, pgerrors.CannotConnectNow)):
        return True
    if isinstance(exc, psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.InterfaceError)


# What the server (or libpq) says when it turns a connection away for a reason that waiting
# will not fix. Connection failures carry no SQLSTATE in psycopg, so the text decides.
_REJECTIONS = re.compile(
    r"password authentication failed|authentication failed for user|no pg_hba\.conf entry"
    r"|database \"[^\"]*\" does not exist|role \"[^\"]*\" does not exist"
    r"|is not permitted to log in|no password supplied|password is required"
    r"|certificate authentication failed",
    re.IGNORECASE,
)
_FULL = re.compile(r"too many clients|connection slots are reserved", re.IGNORECASE)


def connection_reason(exc: BaseException) -> str:
    """The server's own words for a failed connection, without libpq's preamble.

    libpq reports each address it tried (``connection to server at "::1" ... failed: ...``);
    the line with the server's FATAL message is the reason, else the first line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    fatal = [ln for ln in lines if "FATAL:" in ln]
    if fatal:
        return redact(fatal[-1].rsplit("FATAL:", 1)[1].strip())
    first = re.sub(r"^connection failed:\s*", "", lines[0])
    return redact(first)


def is_rejection(exc: BaseException) -> bool:
    """Did the server refuse the connection for a reason of configuration (credentials, an
    unknown database or role, pg_hba.conf), not of load or state?"""
    return isinstance(exc, psycopg.OperationalError) and bool(_REJECTIONS.search(str(exc)))


def connection_advice(exc: BaseException) -> str:
    """What to do about a connection failure, by its reason."""
    if _FULL.search(str(exc)):
        return (
            "the server is at max_connections: lower the sessions of pgflow's processes "
            "(--pool-size, PGFLOW_POOL_SIZE; see the README's connection budget) or raise "
            "the server's max_connections"
        )
    return "check that it is running and that the URL is right"


def connect_error(exc: psycopg.Error, target: str, *, connected_once: bool) -> Exception:
    """The error for a failed connection: ConnectionRejected when the server refused a
    Database's very first one for a reason waiting will not fix (a wrong password, an
    unknown database or role), so a misconfigured process stops at once; afterwards the same
    refusal is an outage like any other (a password rotated under a running worker pauses
    its work rather than failing it)."""
    if is_rejection(exc) and not connected_once:
        return ConnectionRejected(
            f"the database at {target} refused the connection: "
            f"{connection_reason(exc)}; fix the URL (user, password, database name) or "
            "the server's pg_hba.conf"
        )
    if is_connection_error(exc):
        return DatabaseUnavailable(
            f"cannot reach the database at {target}: {connection_reason(exc)}; "
            f"{connection_advice(exc)}"
        )
    return translate(exc, target)


def no_session_error(
    target: str,
    last_failure: psycopg.Error | None,
    *,
    connected_once: bool,
    connect_timeout: float,
    max_size: int,
) -> Exception:
    """The error for a pool checkout that waited ``connect_timeout`` in vain: the server's
    own reason for refusing the pool's last attempt, else a pool whose sessions all stayed
    busy (every user holds one at a time, so this is slow work, never a deadlock)."""
    if last_failure is not None:
        error = connect_error(last_failure, target, connected_once=connected_once)
        if isinstance(error, DatabaseUnavailable):
            return DatabaseUnavailable(
                f"no connection to the database at {target} within "
                f"{connect_timeout:.0f}s: {connection_reason(last_failure)}; "
                f"{connection_advice(last_failure)}"
            )
        return error
    return DatabaseUnavailable(
        f"all {max_size} pooled connections of this process to {target} stayed "
        f"busy for {connect_timeout:.0f}s; raise the pool size (PGFLOW_POOL_SIZE, "
        "--pool-size) or run fewer threads"
    )


def translate(
    exc: psycopg.Error, target: str = ""
) -> DatabaseError | Deduplicated | ConfigurationError:
    """The pgflow error for a psycopg error."""
    where = f" at {target}" if target else ""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if type(exc) is psycopg.DataError and "NUL" in str(exc):
        # Raised by the driver before sending: a text value PostgreSQL cannot hold.
        return ConfigurationError(
            "a name or id contains a NUL character, which PostgreSQL text cannot hold; remove it"
        )
    if (
        isinstance(exc, pgerrors.UniqueViolation)
        and getattr(exc.diag, "constraint_name", None) == DEDUP_CONSTRAINT
    ):
        return Deduplicated("", "", None)
    if isinstance(exc, (pgerrors.UndefinedTable, pgerrors.InvalidSchemaName)):
        return SchemaNotMigrated(
            f"pgflow's tables are missing{where} ({message}); run `pgflow migrate` as the owner"
        )
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return PermissionDenied(
            f"permission denied{where} ({message}); grant the role pgflow's runtime privileges "
            "with `pgflow migrate --grant ROLE` run as the owner"
        )
    if is_connection_error(exc):
        return DatabaseUnavailable(
            f"cannot reach the database{where}: {connection_reason(exc)}; {connection_advice(exc)}"
        )
    return DatabaseError(f"database error{where}: {message}")


@contextlib.contextmanager
def translated(target: str = "") -> Iterator[None]:
    """Run a block, turning psycopg errors into pgflow errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, target) from None
