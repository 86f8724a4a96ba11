"""A controllable clock on database time."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import App


class Clock:
    """Moves database time for one app: delays, rate windows, heartbeats and deadlines all read
    ``{schema}.clock()``, which is ``statement_timestamp()`` plus this app's offset.

    Only this app's sessions see the moved time (the offset is a session setting that pgflow
    applies to the app's pool); other processes on the same database keep real time. Time only
    moves forward. Moving it past the heartbeat timeout makes every executor that has not
    heartbeat since look dead, as if its machine had stopped.

    >>> clock = Clock(app)
    >>> clock.advance(30)        # delayed work of the next 30 seconds is now due
    >>> clock.now()              # the database's time, as the app sees it
    """

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def offset(self) -> float:
        """Seconds this app's database time is ahead of real time."""
        return self.app.db.clock_offset

    def advance(self, seconds: float) -> None:
        """Move this app's database time forward by ``seconds``."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"advance() takes a finite number of seconds ≥ 0, not {seconds!r}")
        self.app.db.advance_clock(seconds)

    def now(self) -> datetime:
        """The database's time as this app sees it (timezone-aware)."""
        row = self.app.db.fetchone("clock_now")
        assert row is not None
        return row["now"]  # type: ignore[no-any-return]
