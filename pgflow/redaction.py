"""The one redaction: no password in anything pgflow records, shows or logs.

Recorded errors (message, args, attributes, traceback: :func:`pgflow.serialization.dumps_error`),
CLI output (:mod:`pgflow.tables`, error lines), log lines (:mod:`pgflow.logs`) and pgflow's own
database error messages (:mod:`pgflow.db.errors`) all pass through :func:`redact` or
:func:`redact_value`. Workflow inputs, outputs, messages and events are the application's data
and are stored as given; the CLI redacts them only when it shows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# Keys whose whole value is a secret, in log fields and error attributes.
SECRET_KEYS = frozenset({"password", "passwd", "secret", "token"})

# scheme://user:PASSWORD@host - up to the last @ of the word (a password may hold an @).
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s'\"]*:)[^\s'\"]*@")
# password=PASSWORD (libpq conninfo, PGPASSWORD=...), and 'password': 'PASSWORD' (a dict's
# repr, JSON); a quoted value may hold spaces.
_PASSWORD_KV = re.compile(
    r"""((?:password|passwd)['"]?\s*[=:]\s*)('[^']*'|"[^"]*"|\S+)""", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` without the password of any connection string, URL or ``password=`` in it.

    >>> redact("cannot connect to postgresql://app:s3cret@db:5432/shop")
    'cannot connect to postgresql://app:***@db:5432/shop'
    """
    if "://" in text:
        text = _PASSWORD_IN_URL.sub(rf"\1{MASK}@", text)
    return _PASSWORD_KV.sub(_mask_value, text)


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') and len(value) > 1 else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


def redact_value(value: Any) -> Any:
    """``value`` with every string redacted and every secret-named key's value masked, through
    dicts, lists and tuples (other values are returned as they are)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: MASK if _secret_key(k) and v is not None else redact_value(v)
            for k, v in value.items()
        }
    if type(value) in (list, tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS
