"""The one redaction (pgflow.redaction): the forms a password takes in a message, and the
recorded error, CLI text and log fields that go through it."""

from __future__ import annotations

import io
import json

import pytest

from pgflow import serialization, tables
from pgflow.logs import configure_logging, get_logger
from pgflow.redaction import redact, redact_value

S = "s3cr3tPW"


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://app:{S}@db:5432/shop",
        f"postgres://:{S}@db/shop",
        f"see 'postgresql://app:{S}@db/x' now",
        f"postgresql://app:p@{S}@db/x",  # an @ in the password
        f"host=db password={S} user=app",
        f"host=db password = '{S} with spaces' user=app",
        f"PGPASSWORD={S} psql",
        f"{{'user': 'app', 'password': '{S}'}}",
        json.dumps({"user": "app", "password": S}),
        f"Password={S};Host=db",
    ],
)
def test_every_form_of_password_is_masked(text: str) -> None:
    out = redact(text)
    assert S not in out and "***" in out, out


def test_text_without_a_password_is_unchanged() -> None:
    for text in (
        "plain text",
        "http://example.com/a:b",
        "a@b.c",
        "user=app host=db",
        "the password is checked",
    ):
        assert redact(text) == text


def test_redact_value_masks_secret_keys_at_any_depth() -> None:
    value = {"a": [f"x://u:{S}@h", {"Password": S, "token": None}], "n": 3}
    assert redact_value(value) == {"a": ["x://u:***@h", {"Password": "***", "token": None}], "n": 3}


class Leaky(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.password = S
        self.detail = {"dsn": f"password={S}"}


def test_recorded_error_message_args_attrs_and_traceback() -> None:
    try:
        try:
            raise Leaky("x" * 70_000 + f" postgresql://app:{S}@db/shop")
        except Leaky as inner:
            raise RuntimeError(f"outer password={S}") from inner
    except RuntimeError as exc:
        text = serialization.dumps_error(exc)
        inner_text = serialization.dumps_error(exc.__cause__)  # type: ignore[arg-type]
    assert S not in text and S not in inner_text
    record = json.loads(inner_text)
    assert record["attrs"]["password"] == "***"
    assert record["message"].endswith("postgresql://app:***@db/shop")
    assert "Traceback" in json.loads(text)["traceback"]


def test_cli_text_and_json_are_redacted() -> None:
    err = RuntimeError(f"postgresql://u:{S}@h/d")
    assert S not in tables.cell(err) and S not in tables.cell(f"password={S}")
    shown = tables.to_json({"error": err, "inputs": {"password": S, "url": f"x://u:{S}@h"}})
    assert S not in shown and json.loads(shown)["inputs"]["password"] == "***"


def test_log_fields_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    get_logger().info("probe", error=f"postgresql://u:{S}@h/d", nested={"password": S})
    assert S not in stream.getvalue() and "probe" in stream.getvalue()
