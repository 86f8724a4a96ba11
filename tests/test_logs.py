"""Logging: JSON for machines, console for people, ids from contextvars, never a password."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from pgflow.errors import ConfigurationError
from pgflow.logs import configure_logging, get_logger
from tests.processes import clean_env, run_python


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def test_json_lines_carry_context_and_hide_passwords() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    structlog.contextvars.bind_contextvars(workflow_id="wf-1", workflow_name="checkout")
    log = get_logger()
    log.info("workflow_claimed", url="postgresql://app:hunter2@db/shop", queue="payments")
    log.debug("not_shown")
    try:
        raise ValueError("cannot reach host=db password=hunter2")
    except ValueError:
        log.exception("workflow_failed")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["workflow_claimed", "workflow_failed"]
    first = lines[0]
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["timestamp"].endswith("Z")
    assert first["level"] == "info"
    assert first["workflow_id"] == "wf-1" and first["workflow_name"] == "checkout"
    assert first["url"] == "postgresql://app:***@db/shop"
    assert "hunter2" not in out.getvalue()


def test_console_format_and_reconfiguration() -> None:
    out = io.StringIO()
    configure_logging("console", "debug", stream=out)
    get_logger("pgflow.worker").debug("worker_started", dsn="password=hunter2 host=db")
    text = out.getvalue()
    assert "worker_started" in text and "pgflow.worker" in text
    assert "hunter2" not in text and "\x1b[" not in text  # no colours off a terminal

    again = io.StringIO()
    configure_logging("auto", "warning", stream=again)  # not a tty: JSON
    get_logger().info("quiet")
    get_logger().warning("loud")
    assert [json.loads(x)["event"] for x in again.getvalue().splitlines()] == ["loud"]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        configure_logging("xml")
    with pytest.raises(ConfigurationError):
        configure_logging("json", "loud")


def test_logging_before_configuration_works(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()
    get_logger().info("early_event")
    captured = capsys.readouterr()
    assert "early_event" in captured.err and "early_event" not in captured.out


def test_library_lines_go_to_stderr_before_any_configuration(tmp_path: Any) -> None:
    # A program that imports pgflow and never configures logging: pgflow's own lines (here a
    # step retry) go to standard error; standard output stays the program's.
    program = (
        "import pgflow\n"
        "app = pgflow.App('quiet', database_url='postgresql://nobody@127.0.0.1:1/none')\n"
        "tries = []\n"
        "@app.step(retries=1, interval=0)\n"
        "def flaky():\n"
        "    tries.append(1)\n"
        "    if len(tries) == 1:\n"
        "        raise ValueError('once')\n"
        "    return 'ok'\n"
        "print(flaky())\n"
    )
    done = run_python(program, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
    assert "step_retrying" in done.stderr
