"""Apps whose settings are declared in code, for tests/test_settings.py (``pgflow worker -A``)."""

from __future__ import annotations

import pgflow

app = pgflow.App("settings-tests", heartbeat_interval=1, heartbeat_timeout=6, threads=2, grace=7)
app.queue("settings")

timeout_only = pgflow.App("timeout-only", settings=pgflow.Settings(heartbeat_timeout=12))
timeout_only.queue("settings")


@app.workflow()
def noop() -> None:
    """Never run: the queue only needs a workflow to serve."""


@timeout_only.workflow()
def noop_too() -> None:
    """Never run."""
