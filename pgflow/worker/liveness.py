"""How a worker process tells its supervisor it is alive (gunicorn's WorkerTmp, in memory).

One small anonymous shared mapping per child, made by the supervisor before the fork: the
child's main loop writes the monotonic time of its last turn (CLOCK_MONOTONIC is one clock for
the whole machine), the time it became ready, and, when it fails, a line saying why. The
supervisor only reads. No file, no descriptor, no connection crosses the fork.
"""

from __future__ import annotations

import mmap
import struct
import time

_TIMES = struct.Struct("=dd")  # last beat, ready at (0: not yet)
_ERROR_AT = _TIMES.size
_ERROR_BYTES = 1024


class Liveness:
    """A child's heartbeat, readiness and last words, shared with the supervisor."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _ERROR_AT + _ERROR_BYTES)  # MAP_SHARED: survives the fork
        _TIMES.pack_into(self._map, 0, time.monotonic(), 0.0)

    # -- written by the child ------------------------------------------------------------------

    def beat(self) -> None:
        """The main loop turned (or is waiting on the database)."""
        struct.pack_into("=d", self._map, 0, time.monotonic())

    def mark_ready(self) -> None:
        """Start-up is over: the main loop runs."""
        now = time.monotonic()
        _TIMES.pack_into(self._map, 0, now, now)

    def record_failure(self, text: str) -> None:
        """Why this process is about to exit (read by the supervisor if start-up failed)."""
        data = text.encode("utf-8", "replace")[: _ERROR_BYTES - 1]
        self._map[_ERROR_AT : _ERROR_AT + len(data) + 1] = data + b"\0"

    # -- read by the supervisor ----------------------------------------------------------------

    def silent_for(self, now: float | None = None) -> float:
        """Seconds since the child's last sign of life (or since it was forked)."""
        last, _ = _TIMES.unpack_from(self._map, 0)
        return (time.monotonic() if now is None else now) - float(last)

    @property
    def ready(self) -> bool:
        return float(_TIMES.unpack_from(self._map, 0)[1]) > 0.0

    def failure(self) -> str:
        raw = self._map[_ERROR_AT : _ERROR_AT + _ERROR_BYTES]
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def close(self) -> None:
        self._map.close()
