"""Workflows that tests/test_messages.py runs both in its own process and in child processes
it kills (so both sides must register the same names and version).

``MSG_APP_CRASH`` in a child's environment says where that child dies with ``os._exit``:
``before_commit`` (recv took the message but its transaction has not committed), ``after_recv``
(recv's checkpoint committed) or ``in_sleep`` (half-way through a durable sleep).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pgflow
import pgflow.checkpoints
import pgflow.messages

app = pgflow.App("msg-tests", app_version="msg-v1")

CRASH = os.environ.get("MSG_APP_CRASH", "")


@app.step()
def crash_point(where: str) -> None:
    if where == CRASH:
        os._exit(9)


@app.workflow()
def receive_one(topic: str) -> Any:
    message = pgflow.recv(topic, timeout=30)
    crash_point("after_recv")
    return message


@app.workflow()
def nap(seconds: float) -> str:
    if CRASH == "in_sleep":
        threading.Timer(seconds / 3, os._exit, (9,)).start()
    pgflow.sleep(seconds)
    return "awake"


def die_before_commit() -> None:
    """Make recv's checkpoint write end the process: the consuming transaction is open (the
    message row deleted, not committed) when the process dies."""

    def record_in_transaction(*args: Any, **kwargs: Any) -> None:
        os._exit(9)

    pgflow.checkpoints.record_in_transaction = record_in_transaction


def run_in_child(url: str, workflow: str, *args: Any, workflow_id: str) -> None:
    """Body of a child process: start ``workflow`` with a known id and run it until it dies."""
    app.settings = app.settings.replace(database_url=url)
    if CRASH == "before_commit":
        die_before_commit()
    workflows: dict[str, Callable[..., Any]] = {"receive_one": receive_one, "nap": nap}
    fn = workflows[workflow]
    app.options(workflow_id=workflow_id).call(fn, *args)
