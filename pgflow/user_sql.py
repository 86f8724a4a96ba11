"""The user's own SQL in an ``@app.transaction`` body: its errors stay the user's, and it may
not end pgflow's transaction.

pgflow's error boundary (``Database.connection``) translates psycopg errors into pgflow errors,
which is right for pgflow's own statements and wrong for the user's: a ``UniqueViolation`` of
theirs must reach their code as itself, with its SQLSTATE, and be what the step records. So the
body's psycopg errors cross the boundary wrapped (:class:`UserSQLFailure`, not a psycopg error)
and are unwrapped on the far side (:func:`unwrapped`). A lost connection is the exception: that
is pgflow's to retry, the transaction having rolled back.

``pgflow.db()`` is a :class:`GuardedCursor`: a statement that would end the transaction
(COMMIT, ROLLBACK, BEGIN, PREPARE TRANSACTION, ...) is refused before it is sent, since a commit
of the body apart from its checkpoint would break exactly-once. After the body, the
transaction must still be pgflow's, open and not aborted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.pq import TransactionStatus

from . import context
from .errors import TransactionControlError

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")

# First words of statements that end (or try to restart) the transaction block.
_ENDING = {"COMMIT", "END", "ROLLBACK", "ABORT", "BEGIN", "START"}
_OPTIONAL = {"WORK", "TRANSACTION"}


class UserSQLFailure(Exception):
    """Carries a psycopg error of the user's SQL across pgflow's error boundary."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def unwrapped() -> Iterator[None]:
    """Re-raise the user's own psycopg error that a transaction body raised."""
    try:
        yield
    except UserSQLFailure as failure:
        error = failure.error
        failure.__cause__ = failure.__context__ = None  # no cycle back to the carrier
        raise error from error.__cause__


def _words(text: str) -> Iterator[tuple[str, int]]:
    """Upper-cased words outside quotes and comments, with the statement number they are in
    (a ``;`` outside quotes starts the next statement, except inside a ``BEGIN ATOMIC`` body
    of a CREATE statement, counted as psql does)."""
    i, n, statement, depth = 0, len(text), 0, 0
    first: str | None = None
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and text.startswith("/*", i):
            i = _after_block_comment(text, i)
        elif c in "'\"":
            i = _after_quoted(text, i)
        elif c == "$" and i + 1 < n and not text[i + 1].isdigit():
            i = _after_dollar_quoted(text, i)
        elif c.isalpha() or c == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] in "_$"):
                i += 1
            word = text[start:i].upper()
            if first is None:
                first = word
            elif first == "CREATE":
                if word in ("BEGIN", "CASE"):
                    depth += 1
                elif word == "END" and depth:
                    depth -= 1
            yield word, statement
        elif c == ";" and not depth:
            statement, first, i = statement + 1, None, i + 1
        else:
            i += 1


def _after_block_comment(text: str, i: int) -> int:
    """The index after the ``/* ... */`` comment starting at ``i`` (they nest)."""
    n, nesting, i = len(text), 1, i + 2
    while i < n and nesting:
        if text.startswith("/*", i):
            nesting, i = nesting + 1, i + 2
        elif text.startswith("*/", i):
            nesting, i = nesting - 1, i + 2
        else:
            i += 1
    return i


def _after_quoted(text: str, i: int) -> int:
    """The index after the string or quoted identifier starting at ``i``: a doubled quote
    stays inside, and so does a backslash-escaped one in an ``E'...'`` string."""
    n, c = len(text), text[i]
    escapes = (
        c == "'"
        and i > 0
        and text[i - 1] in "eE"
        and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
    )
    i += 1
    while i < n:
        if escapes and text[i] == "\\":
            i += 2
        elif text[i] == c:
            if text.startswith(c * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i


def _after_dollar_quoted(text: str, i: int) -> int:
    """The index after the ``$tag$ ... $tag$`` string starting at ``i``, or after the ``$``
    alone when no tag starts there."""
    n = len(text)
    close = text.find("$", i + 1)
    tag = text[i : close + 1] if close > 0 else ""
    if tag and all(ch.isalnum() or ch == "_" for ch in tag[1:-1]):
        end = text.find(tag, close + 1)
        return n if end < 0 else end + len(tag)
    return i + 1


def transaction_control(text: str) -> str | None:
    """The first statement of ``text`` that would end or restart a transaction block
    (``"COMMIT"``, ``"ROLLBACK"``, ``"PREPARE TRANSACTION"``...), or None. ``ROLLBACK TO
    SAVEPOINT`` and the user's own savepoints are allowed: they stay inside the block."""
    statements: dict[int, list[str]] = {}
    for word, number in _words(text):
        statements.setdefault(number, []).append(word)
    for words in statements.values():
        head = words[0]
        if head == "PREPARE" and words[1:2] == ["TRANSACTION"]:
            return "PREPARE TRANSACTION"
        if head not in _ENDING:
            continue
        rest = (
            [w for w in words[1:3] if w not in _OPTIONAL]
            if head in ("ROLLBACK", "ABORT")
            else words[1:]
        )
        if head == "ROLLBACK" and rest[:1] == ["TO"]:
            continue  # ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
        if head == "START" and words[1:2] != ["TRANSACTION"]:
            continue
        return head
    return None


class GuardedCursor(psycopg.Cursor[Any]):
    """``pgflow.db()``: a cursor on the step's transaction that refuses transaction control."""

    def _refuse(self, query: Any) -> None:
        if isinstance(query, sql.Composable):
            text = query.as_string(self)
        elif isinstance(query, (bytes, bytearray, memoryview)):
            text = bytes(query).decode("utf-8", "replace")
        else:
            text = str(query)
        found = transaction_control(text)
        if found is not None:
            raise TransactionControlError(
                f"{found} inside an @app.transaction body was refused (nothing was sent): "
                "pgflow commits the body together with its checkpoint; return from the body "
                "to commit, raise to roll back, or use a savepoint "
                "(`with pgflow.db().connection.transaction():`) for a partial rollback"
            )

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        self._refuse(query)
        return super().execute(query, params, prepare=prepare, binary=binary)

    def executemany(
        self, query: Any, params_seq: Iterable[Any], *, returning: bool = False
    ) -> None:
        self._refuse(query)
        super().executemany(query, params_seq, returning=returning)

    def stream(
        self, query: Any, params: Any = None, *, binary: bool | None = None, size: int = 1
    ) -> Iterator[Any]:
        self._refuse(query)
        return super().stream(query, params, binary=binary, size=size)


def connection_lost(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Did ``exc`` lose the session (pgflow retries on a new one) rather than fail a statement
    of the user's (theirs to handle)? Judged by the session's state, not the error's class:
    a lock timeout or a cancelled statement is an OperationalError of the user's."""
    return (
        conn.closed
        or conn.broken
        or isinstance(
            exc, (pgerrors.AdminShutdown, pgerrors.CrashShutdown, pgerrors.CannotConnectNow)
        )
        or (exc.sqlstate or "").startswith("08")
    )


def run_body(conn: psycopg.Connection[Any], fn: Callable[[], T]) -> T:
    """Call a transaction body on ``conn``'s open transaction, ``pgflow.db()`` guarded.

    The body's psycopg errors leave wrapped in UserSQLFailure (unwrap with
    :func:`unwrapped` outside the connection block), except a lost connection's.
    """
    token = context.enter_transaction(GuardedCursor(conn))
    try:
        result = fn()
    except psycopg.Error as exc:
        if connection_lost(conn, exc):
            raise
        raise UserSQLFailure(exc) from exc
    finally:
        context.leave_transaction(token)
    state = conn.info.transaction_status
    if state == TransactionStatus.INERROR:
        raise TransactionControlError(
            "the @app.transaction body returned with its transaction aborted: it caught a "
            "database error without rolling back to a savepoint; wrap the statement that may "
            "fail in `with pgflow.db().connection.transaction():` or let the error propagate"
        )
    if state == TransactionStatus.IDLE:
        raise TransactionControlError(
            "the @app.transaction body ended pgflow's transaction (through the connection "
            "behind pgflow.db()); its work may have committed without its checkpoint: never "
            "commit, roll back or begin inside the body"
        )
    return result
