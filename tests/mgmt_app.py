"""The application tests/test_management.py and tests/test_cli.py manage. A Client in another
process enqueues its workflows by name without importing this module."""

from __future__ import annotations

import pgflow

app = pgflow.App("mgmt-tests", app_version="mgmt-v1")
jobs = app.queue("jobs")


@app.step()
def double_step(x: int) -> int:
    return 2 * x


@app.workflow(name="double")
def double(x: int) -> int:
    return double_step(x)
