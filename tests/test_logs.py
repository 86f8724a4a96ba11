"""Logging: JSON for machines, console for people, ids from contextvars, never a password."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from pgflow.errors import ConfigurationError
from pgflow.logs import configure_logging, get_logger


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
    assert "early_event" in capsys.readouterr().out
