"""A task module whose code changes between two imports: its workflow returns the text of the
file named by ``RELOAD_APP_FILE`` as read when the module was imported. tests/test_supervisor.py
rewrites the file and sends SIGHUP: new worker processes must run the new text."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pgflow

CODE = Path(os.environ["RELOAD_APP_FILE"]).read_text().strip()

app = pgflow.App("reload", app_version="reload-v1")
jobs = app.queue("jobs")


@app.step()
def wait(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@app.workflow()
def which_code(seconds: float) -> dict[str, object]:
    """Holds a thread for ``seconds``; returns the code version and the pid that ran it."""
    return {"code": CODE, "pid": wait(seconds)}
