"""No password in anything pgflow records, shows or logs: a step and a workflow fail with
errors quoting a database URL with its password, a ``password=`` conninfo keyword and a
``password`` attribute. The stored rows, ``pgflow workflows show``/``list --json`` and the
worker's log lines keep the errors readable but never the secret."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import pgflow
from tests.chaos import chaos_app
from tests.chaos.harness import HEARTBEAT
from tests.chaos.test_hostile import cli

pytestmark = [pytest.mark.chaos]

SECRET = chaos_app.LEAKED


def stored_text(url: str) -> str:
    """Every row pgflow keeps, as text."""
    with psycopg.connect(url, autocommit=True) as conn:
        return "\n".join(
            str(row)
            for table in (
                "workflow_status",
                "operation_outputs",
                "notifications",
                "workflow_events",
            )
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pgflow.{table}",)).fetchone()
            == (True,)
            for row in conn.execute(f"SELECT * FROM pgflow.{table}").fetchall()
        )


def test_recorded_shown_and_logged_errors_hold_no_password(
    capp: pgflow.App, chaos_url: str, workers: Any
) -> None:
    h = chaos_app.chaos.enqueue(chaos_app.leaky)
    w = workers("-P", "1", "-c", "2", *HEARTBEAT, "--burst", "--log-level", "debug")
    assert w.wait(60) == 0, w.stderr()[-3000:]
    with pytest.raises(RuntimeError) as info:
        h.result(timeout=5)
    step = capp.steps(h.workflow_id)[0]
    shown = cli("workflows", "show", h.workflow_id, url=chaos_url)
    shown_json = cli("workflows", "show", "--json", h.workflow_id, url=chaos_url)
    listed = cli("workflows", "list", "--json", url=chaos_url)
    stored = stored_text(chaos_url)
    print(
        f"\nworkflow error: {info.value}\nstep error: {step.error!r} "
        f"{getattr(step.error, '__dict__', {})}"
    )
    for out in (shown, shown_json, listed):
        assert out.returncode == 0, out.stderr
    everything = {
        "stored rows": stored,
        "workflows show": shown.stdout,
        "workflows show --json": shown_json.stdout,
        "workflows list --json": listed.stdout,
        "worker logs": w.stderr() + w.stdout(),
        "result": str(info.value),
        "step error": repr(step.error),
    }
    for where, text in everything.items():
        assert SECRET not in text, where
    # Redacted, not dropped: the errors still say what happened.
    assert "postgresql://app:***@db.internal:5432/shop" in str(step.error)
    assert "password=***" in str(info.value)
    assert getattr(step.error, "password", "***") == "***"
    detail = json.loads(shown_json.stdout)
    assert detail["workflow"]["status"] == "ERROR"
    assert "db.internal" in json.dumps(detail["steps"])
    assert "Traceback" in stored and "leaky_step" in stored
