"""The dashboard's admin sessions and CSRF tokens, signed with a key derived from the admin token.

Without an admin token the dashboard is read-only and nothing here is used. With one, logging
in (the token, typed into a form) sets a session cookie ``<nonce>.<issued>.<signature>``
(HttpOnly, SameSite=Strict); every action is a POST carrying the session's CSRF token, an HMAC
of its nonce, so another site can neither read nor forge it. The key is derived from the admin
token: changing the token ends every session; restarts and several processes keep them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "pgflow_dashboard_session"
SESSION_SECONDS = 12 * 3600


class Sessions:
    def __init__(self, admin_token: str) -> None:
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, b"pgflow-dashboard-session-v1", hashlib.sha256).digest()

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def new_session(self, now: float | None = None) -> str:
        body = f"{secrets.token_urlsafe(24)}.{int(now if now is not None else time.time())}"
        return f"{body}.{self._sign(body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        issued = body.rpartition(".")[2]
        age = (now if now is not None else time.time()) - int(issued) if issued.isdigit() else -1
        return 0 <= age < SESSION_SECONDS

    def csrf_token(self, cookie: str) -> str:
        return self._sign("csrf:" + cookie)

    def csrf_valid(self, cookie: str | None, given: str | None) -> bool:
        if not cookie or not given or not self.valid(cookie):
            return False
        return hmac.compare_digest(given, self.csrf_token(cookie))
