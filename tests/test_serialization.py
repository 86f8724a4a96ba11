"""Round trips, refusals, size limits and error records of pgflow.serialization."""

from __future__ import annotations

import json
import math
import pickle
import sys
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgflow.errors import (
    ConfigurationError,
    Deduplicated,
    SerializationError,
    WorkflowCancelled,
)
from pgflow.serialization import (
    JSON,
    PICKLE,
    RecordedError,
    Serializer,
    dumps_error,
    dumps_inputs,
    dumps_value,
    get_serializer,
    loads_error,
    loads_inputs,
    loads_value,
    serializer_for_row,
)

LIMIT = 16 * 1024 * 1024


def same(a: Any, b: Any) -> bool:
    """Equal in type and value, all the way down (``==`` alone would accept 1 == 1.0 == True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (float, Decimal, datetime, time)):
        # repr tells -0.0 from 0.0, Decimal("1.0") from Decimal("1"), and shows tzinfo and fold.
        return repr(a) == repr(b)
    return bool(a == b)


# --- strategies ------------------------------------------------------------------------------

offsets = st.builds(
    lambda minutes, micros: timezone(timedelta(minutes=minutes, microseconds=micros)),
    st.integers(-23 * 60, 23 * 60),
    st.sampled_from([0, 0, 0, 7, 999_999]),
)
zones = st.one_of(offsets, st.timezones())
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=()))
keys = st.one_of(texts, st.sampled_from(["__pgflow__", "v", "args", "kwargs", "tz"]))

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**5000), max_value=10**5000),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.binary(),
    st.datetimes(),
    st.datetimes(timezones=zones),
    st.dates(),
    st.times(),
    st.times(timezones=offsets),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.decimals(allow_nan=False, places=40),
    st.uuids(),
)


def nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    )


values = st.recursive(leaves, nested, max_leaves=12)
# Pickle takes more than JSON: sets, NUL characters and NaN come back as they went.
pickle_values = st.recursive(
    st.one_of(leaves, st.text(), st.frozensets(st.integers(), max_size=3)),
    lambda children: st.one_of(nested(children), st.sets(st.integers(), max_size=3)),
    max_leaves=12,
)
identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)


# --- round trips -----------------------------------------------------------------------------


@settings(max_examples=300)
@given(values)
def test_json_round_trips_exactly(value: Any) -> None:
    text = JSON.dumps(value)
    assert same(JSON.loads(text), value)
    assert "\x00" not in text
    text.encode("utf-8")  # psycopg must be able to send it


@settings(max_examples=200)
@given(pickle_values)
def test_pickle_round_trips_exactly(value: Any) -> None:
    assert same(PICKLE.loads(PICKLE.dumps(value)), value)


@pytest.mark.parametrize("serializer", [JSON, PICKLE], ids=["json", "pickle"])
@settings(max_examples=100)
@given(
    args=st.lists(values, max_size=4).map(tuple),
    kwargs=st.dictionaries(identifiers, values, max_size=4),
)
def test_inputs_round_trip(
    serializer: Serializer, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    text = dumps_inputs(serializer, args, kwargs, max_bytes=LIMIT, what="workflow 'w'")
    assert same(loads_inputs(serializer, text), (args, kwargs))


@pytest.mark.parametrize(
    "value",
    [
        {"__pgflow__": "tuple", "v": [1, 2]},
        {"__pgflow__": {"__pgflow__": 1}, "v": (1,)},
        [(), ((),), {}, [[]]],
        "\\u0000 is a backslash, not a NUL",
        "lone \ud800 surrogate and é",
        2**20000,
        -(2**7000) + 1,
        datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        datetime(2021, 3, 14, 2, 30, tzinfo=ZoneInfo("America/New_York")),  # a time that never was
        datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2020, 1, 1, tzinfo=timezone(timedelta(microseconds=-7))),
        datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET")),
        time(12, tzinfo=timezone(timedelta(hours=-5), "EST")),
        time(1, 2, 3, 4, fold=1),
        Decimal("3.14159265358979323846264338327950288419716939937510582097494459"),
        Decimal("-0E+3"),
        Decimal("sNaN"),
        bytes(range(256)),
        -0.0,
        UUID("12345678-1234-5678-1234-567812345678"),
    ],
    ids=lambda value: type(value).__name__,
)
def test_json_round_trips_edge_cases(value: Any) -> None:
    back = JSON.loads(JSON.dumps(value))
    if isinstance(value, Decimal) and value.is_nan():
        assert str(back) == str(value)
    else:
        assert same(back, value)


def test_bytearray_comes_back_as_bytes() -> None:
    assert same(JSON.loads(JSON.dumps(bytearray(b"ab\x00"))), b"ab\x00")


def test_plain_values_stay_plain_json() -> None:
    # Other tools (psql, the CLI) can read what pgflow writes for JSON-native values.
    value = {"args": [1, "x", [True, None, 1.5]], "kwargs": {"k": {"n": -2}}}
    assert json.loads(JSON.dumps(value)) == value


def test_get_serializer() -> None:
    assert get_serializer("json") is JSON
    assert get_serializer("pickle") is PICKLE
    assert (JSON.name, PICKLE.name) == ("json", "pickle")
    with pytest.raises(ConfigurationError, match="'json' or 'pickle'"):
        get_serializer("yaml")


# --- refusals --------------------------------------------------------------------------------


class Opaque:
    pass


REFUSED = [
    ({1, 2}, "sets are not JSON; pass a sorted list"),
    (frozenset({1}), "sets are not JSON"),
    (Opaque(), "test_serialization.Opaque object"),
    (lambda: 1, "is a function"),
    (len, "is a function"),
    (Opaque, "is a class"),
    (math.nan, "JSON has no NaN or Infinity"),
    (math.inf, "JSON has no NaN or Infinity"),
    ("a\x00b", "NUL"),
    ({"a\x00": 1}, "NUL"),
    ({1: "x"}, "key of type int"),
    (ConfigurationError, "is a class"),
]


@pytest.mark.parametrize(("bad", "reason"), REFUSED, ids=repr)
def test_json_refusal_names_the_positional_argument(bad: Any, reason: str) -> None:
    with pytest.raises(SerializationError) as caught:
        dumps_inputs(JSON, ("fine", bad), {"ok": 1}, max_bytes=LIMIT, what="workflow 'checkout'")
    message = str(caught.value)
    assert "positional argument 2 (args[1]) of workflow 'checkout'" in message
    assert reason in message
    assert "App(serializer='pickle')" in message


@pytest.mark.parametrize(("bad", "reason"), REFUSED, ids=repr)
def test_json_refusal_names_the_keyword_argument(bad: Any, reason: str) -> None:
    with pytest.raises(SerializationError) as caught:
        dumps_inputs(JSON, (1,), {"card": bad}, max_bytes=LIMIT)
    assert "keyword argument 'card' of workflow" in str(caught.value)
    assert reason in str(caught.value)


def test_json_refusal_points_inside_the_argument() -> None:
    with pytest.raises(SerializationError) as caught:
        dumps_inputs(JSON, ([{"items": [1, {2}]}],), {}, max_bytes=LIMIT, what="workflow 'w'")
    message = str(caught.value)
    assert "positional argument 1 (args[0])" in message
    assert "the value at [0]['items'][1] is a set" in message


def test_refusal_never_shows_the_value() -> None:
    with pytest.raises(SerializationError) as caught:
        dumps_inputs(JSON, (), {"card": {"4111 1111 1111 1111"}}, max_bytes=LIMIT)
    assert "4111" not in str(caught.value)


def test_enum_is_refused_rather_than_changed() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    with pytest.raises(SerializationError, match="subclass of int"):
        dumps_value(JSON, Color.RED, max_bytes=LIMIT, what="output of step 'paint'")


def test_cycle_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match=r"positional argument 1 .*contains itself"):
        dumps_inputs(JSON, (loop,), {}, max_bytes=LIMIT)


def test_dumps_value_names_what() -> None:
    with pytest.raises(SerializationError, match=r"output of step 'charge'.*sets are not JSON"):
        dumps_value(JSON, {1}, max_bytes=LIMIT, what="output of step 'charge'")
    with pytest.raises(SerializationError, match="cannot serialize value"):
        JSON.dumps(object())


def test_pickle_refusal_names_the_argument() -> None:
    import threading

    with pytest.raises(SerializationError) as caught:
        dumps_inputs(PICKLE, (1, lambda: 2), {}, max_bytes=LIMIT, what="workflow 'w'")
    assert "positional argument 2 (args[1]) of workflow 'w'" in str(caught.value)
    with pytest.raises(SerializationError, match="keyword argument 'lock'"):
        dumps_inputs(PICKLE, (), {"lock": threading.Lock()}, max_bytes=LIMIT)


def test_pickle_stores_what_json_refuses() -> None:
    value = ({1, 2}, "a\x00b", {1: math.inf})
    back = PICKLE.loads(dumps_value(PICKLE, value, max_bytes=LIMIT, what="output"))
    assert back[:2] == value[:2] and back[2] == {1: math.inf}


# --- size limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("serializer", [JSON, PICKLE], ids=["json", "pickle"])
def test_max_bytes_is_enforced(serializer: Serializer) -> None:
    text = dumps_value(serializer, "x" * 100, max_bytes=LIMIT, what="output of step 's'")
    assert dumps_value(serializer, "x" * 100, max_bytes=len(text), what="s") == text
    with pytest.raises(SerializationError, match=f"output of step 's' is too large.*{len(text)}"):
        dumps_value(serializer, "x" * 100, max_bytes=len(text) - 1, what="output of step 's'")
    with pytest.raises(SerializationError, match="inputs of workflow 'w' is too large"):
        dumps_inputs(serializer, ("x" * 100,), {}, max_bytes=50, what="workflow 'w'")


def test_max_bytes_counts_utf8_bytes() -> None:
    text = dumps_value(JSON, "é" * 10, max_bytes=LIMIT, what="v")
    size = len(text.encode("utf-8"))
    assert size > len(text)
    dumps_value(JSON, "é" * 10, max_bytes=size, what="v")
    with pytest.raises(SerializationError, match="too large"):
        dumps_value(JSON, "é" * 10, max_bytes=size - 1, what="v")


# --- reading rows ----------------------------------------------------------------------------


def test_json_app_refuses_a_pickle_row() -> None:
    text = PICKLE.dumps({"a": 1})
    with pytest.raises(SerializationError) as caught:
        loads_value(JSON, "pickle", text)
    assert "pickle" in str(caught.value)
    assert "serializer='pickle'" in str(caught.value)
    with pytest.raises(SerializationError, match="pickle"):
        serializer_for_row(JSON, "pickle")


def test_rows_every_app_can_read() -> None:
    assert loads_value(PICKLE, "pickle", PICKLE.dumps({1, 2})) == {1, 2}
    assert loads_value(PICKLE, "json", JSON.dumps((1, 2))) == (1, 2)
    assert loads_value(JSON, "json", JSON.dumps((1, 2))) == (1, 2)
    assert loads_value(JSON, "pickle", None) is None
    assert serializer_for_row(PICKLE, "json") is JSON
    with pytest.raises(SerializationError, match="unknown serializer"):
        loads_value(JSON, "yaml", "x: 1")


@pytest.mark.parametrize(
    "text",
    ["{", '{"__pgflow__": "martian", "v": 1}', '{"__pgflow__": "datetime", "v": "yesterday"}'],
)
def test_corrupt_json_is_a_serialization_error(text: str) -> None:
    with pytest.raises(SerializationError):
        JSON.loads(text)


def test_corrupt_inputs_are_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="args, kwargs"):
        loads_inputs(JSON, "[1, 2]")
    with pytest.raises(SerializationError, match="unpickle"):
        PICKLE.loads("not base64!")


# --- errors ----------------------------------------------------------------------------------


class PaymentDeclined(Exception):
    def __init__(self, code: str, amount: Decimal) -> None:
        super().__init__(code, amount)
        self.code = code
        self.amount = amount


class Outer:
    class Inner(LookupError):
        pass


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_builtin_error_is_rebuilt() -> None:
    back = loads_error(dumps_error(raised(ValueError("x"))))
    assert type(back) is ValueError and back.args == ("x",)


def test_custom_error_is_rebuilt() -> None:
    back = loads_error(dumps_error(raised(PaymentDeclined("card_declined", Decimal("9.99")))))
    assert type(back) is PaymentDeclined
    assert back.args == ("card_declined", Decimal("9.99"))
    assert back.amount == Decimal("9.99")
    nested = loads_error(dumps_error(Outer.Inner("k")))
    assert type(nested) is Outer.Inner and nested.args == ("k",)


def test_pgflow_errors_with_their_own_init_are_rebuilt() -> None:
    back = loads_error(dumps_error(Deduplicated("q", "d", "wf-1")))
    assert type(back) is Deduplicated
    assert (back.queue, back.existing_workflow_id) == ("q", "wf-1")
    assert str(back) == str(Deduplicated("q", "d", "wf-1"))
    cancelled = loads_error(dumps_error(WorkflowCancelled("wf-2", "timed out")))
    assert type(cancelled) is WorkflowCancelled
    assert str(cancelled) == "workflow wf-2 was timed out" and cancelled.reason == "timed out"


def test_error_record_is_json() -> None:
    record = json.loads(dumps_error(raised(ValueError("bad", 3))))
    assert record["type"] == "ValueError" and record["module"] == "builtins"
    assert record["message"] == "('bad', 3)" and record["args"] == ["bad", 3]
    assert "Traceback" in record["traceback"] and "raise exc" in record["traceback"]


def test_unknown_type_falls_back_to_recorded_error() -> None:
    text = json.dumps(
        {
            "type": "Gone",
            "module": "somewhere.else",
            "message": "it broke",
            "args": ["it broke"],
            "traceback": "Traceback ...",
        }
    )
    back = loads_error(text)
    assert isinstance(back, RecordedError)
    assert (back.error_type, back.message) == ("somewhere.else.Gone", "it broke")
    assert back.traceback_text == "Traceback ..."
    assert str(back) == "somewhere.else.Gone: it broke"
    assert pickle.loads(pickle.dumps(back)).message == "it broke"


def test_local_class_and_unjsonable_args_fall_back() -> None:
    class Local(Exception):
        pass

    back = loads_error(dumps_error(Local("x")))
    assert isinstance(back, RecordedError) and back.error_type.endswith("<locals>.Local")
    opaque = loads_error(dumps_error(ValueError(Opaque())))
    assert isinstance(opaque, RecordedError) and opaque.error_type == "ValueError"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),  # not a class
        ("builtins", "SystemExit"),  # would stop the reading process
        ("builtins", "KeyboardInterrupt"),
        ("builtins", "int"),  # a class, but no exception
    ],
)
def test_only_exception_classes_are_instantiated(module: str, name: str) -> None:
    text = json.dumps(
        {"type": name, "module": module, "message": "m", "args": ["echo hi"], "traceback": None}
    )
    assert isinstance(loads_error(text), RecordedError)


def test_loads_error_never_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = tmp_path / "pgflow_canary_module.py"
    canary.write_text("raise SystemExit('pgflow imported a module named in the database')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = json.dumps(
        {
            "type": "Boom",
            "module": "pgflow_canary_module",
            "message": "m",
            "args": ["m"],
            "traceback": "",
        }
    )
    back = loads_error(text)
    assert isinstance(back, RecordedError)
    assert "pgflow_canary_module" not in sys.modules


def test_dumps_error_never_fails() -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

        @property
        def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
            raise RuntimeError("no")

    record = json.loads(dumps_error(Hostile(math.nan, {1}, "\x00")))
    assert record["args"] is None
    assert "str() failed" in record["message"]
    assert isinstance(loads_error("not json"), RecordedError)
    huge = json.loads(dumps_error(ValueError("y" * 1_000_000)))
    assert len(huge["message"]) < 100_000 and huge["message"].startswith("[")
