"""Health for the endpoints that report it (``pgflow worker --metrics-port``, the dashboard):
readiness is the database answering a statement within a short timeout.

>>> check_database(db).ok
True
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .redaction import redact

if TYPE_CHECKING:
    from .db.pool import Database

# Seconds a readiness check may take (connect plus one statement): a probe must answer well
# within its caller's timeout (Kubernetes: 1 s by default, often raised to a few).
READY_TIMEOUT = 2.0


@dataclass(frozen=True)
class DatabaseCheck:
    """One readiness probe: whether the server answered, in how long, or why not."""

    ok: bool
    seconds: float
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "seconds": round(self.seconds, 4), "error": self.error}


def check_database(db: Database) -> DatabaseCheck:
    """Connect afresh (``db``'s connect timeout bounds the wait) and run ``SELECT 1``.

    A fresh connection, not a pooled one: a pool would wait out its own reconnection backoff,
    and a probe must say now whether a new session can be had."""
    began = time.monotonic()
    try:
        conn = db.connect()
        try:
            db.execute(conn, "ping").fetchone()
        finally:
            conn.close()
    except Exception as exc:  # PgflowError from connect, psycopg's own from the statement
        return DatabaseCheck(False, time.monotonic() - began, redact(_first_line(exc)))
    return DatabaseCheck(True, time.monotonic() - began)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def with_statement_timeout(url: str, milliseconds: int) -> str:
    """``url`` with a statement_timeout for its sessions, after the URL's (or PGOPTIONS')
    own options: a probe's statements must end, whatever the database is doing."""
    params = conninfo_to_dict(url)
    given = params.get("options") or os.environ.get("PGOPTIONS") or ""
    params["options"] = f"{given} -c statement_timeout={milliseconds}".strip()
    return make_conninfo("", **params)
