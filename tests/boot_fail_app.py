"""A task module that imports in the supervisor but fails in every forked worker process, as a
module does that opens something at import which only works once per machine, or that checks
where it runs. tests/test_supervisor.py runs ``pgflow worker -A tests.boot_fail_app``.

``BOOT_FAIL_APP_MODE=hang``: the child's import blocks forever instead of raising (a start-up
waiting on something that never comes).
"""

from __future__ import annotations

import os
import time

import pgflow

# The first process to import this module (the supervisor) writes its pid in its environment,
# which its forked children inherit; a child, importing the module afresh, finds another pid.
_FIRST = os.environ.setdefault("BOOT_FAIL_APP_IMPORTED_BY", str(os.getpid()))
if str(os.getpid()) != _FIRST:
    if os.environ.get("BOOT_FAIL_APP_MODE") == "hang":
        time.sleep(3600)
    raise RuntimeError("boot_fail_app cannot start in a forked worker process")

app = pgflow.App("boot-fail")
jobs = app.queue("jobs")


@app.workflow()
def noop() -> None:
    """Never runs: no worker process gets this far."""
