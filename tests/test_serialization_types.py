"""Dataclasses and pydantic models an app registers round-trip through the JSON serializer;
nothing else does, and no class named by a row is ever imported."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

import pgflow
from pgflow.serialization import JSON, dumps_value, loads_value
from pgflow.serialization_types import TypedJson
from tests.apps import MakeApp

pydantic = pytest.importorskip("pydantic")


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    price: Decimal


@dataclasses.dataclass
class Order:
    id: int
    items: list[Item]
    at: datetime
    note: str | None = None
    total: int = dataclasses.field(default=0, init=False)


class Receipt(pydantic.BaseModel):  # type: ignore[misc,name-defined]
    order_id: int
    paid_at: datetime
    lines: list[str]


AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def typed(*classes: type) -> TypedJson:
    codec = TypedJson()
    for cls in classes:
        codec.register(cls)
    return codec


def round_trip(codec: TypedJson, value: Any) -> Any:
    return loads_value(codec, "json", dumps_value(codec, value, max_bytes=1 << 20, what="v"))


def test_registered_dataclasses_and_models_round_trip() -> None:
    codec = typed(Item, Order, Receipt)
    order = Order(7, [Item("a", Decimal("1.50")), Item("b", Decimal("2"))], AT, note="gift")
    order.total = 350
    back = round_trip(
        codec, {"order": order, "receipts": [Receipt(order_id=7, paid_at=AT, lines=["a", "b"])]}
    )
    assert back["order"] == order and back["order"].total == 350
    assert type(back["order"].items[0]) is Item and back["order"].items[0].price == Decimal("1.50")
    assert back["receipts"][0] == Receipt(order_id=7, paid_at=AT, lines=["a", "b"])
    stored = json.loads(dumps_value(codec, Item("a", Decimal(1)), max_bytes=1 << 20, what="v"))
    assert stored["t"] == "tests.test_serialization_types.Item"


def test_unregistered_classes_are_refused_with_the_fix() -> None:
    with pytest.raises(pgflow.SerializationError, match=r"app\.register_type"):
        dumps_value(
            typed(Order), Order(1, [Item("a", Decimal(1))], AT), max_bytes=1 << 20, what="v"
        )  # Item is not registered
    with pytest.raises(pgflow.SerializationError, match=r"app\.register_type"):
        dumps_value(JSON, Item("a", Decimal(1)), max_bytes=1 << 20, what="v")
    with pytest.raises(pgflow.ConfigurationError, match="dataclass or a pydantic"):
        TypedJson().register(dict)


def test_a_name_in_a_row_is_never_imported() -> None:
    text = dumps_value(typed(Item), Item("a", Decimal(1)), max_bytes=1 << 20, what="v")
    with pytest.raises(pgflow.SerializationError, match="does not register"):
        loads_value(typed(Order), "json", text)
    # Without an app (a Client, the CLI): its fields, and its name.
    assert loads_value(JSON, "json", text) == {
        "__type__": "tests.test_serialization_types.Item",
        "sku": "a",
        "price": Decimal(1),
    }


@pytest.fixture
def app(make_app: MakeApp) -> pgflow.App:
    return make_app("typed", types=[Item, Order])


def test_a_workflow_takes_and_returns_registered_types(app: pgflow.App) -> None:
    app.register_type(Receipt)

    @app.step()
    def price(order: Order) -> Decimal:
        return sum((i.price for i in order.items), Decimal(0))

    @app.workflow()
    def checkout(order: Order) -> Receipt:
        return Receipt(order_id=order.id, paid_at=order.at, lines=[str(price(order))])

    order = Order(9, [Item("a", Decimal("1.25"))], AT)
    handle = app.start(checkout, order)
    assert handle.result(timeout=30) == Receipt(order_id=9, paid_at=AT, lines=["1.25"])
    status = app.retrieve(handle.workflow_id).status()
    assert status.inputs == {"args": [order], "kwargs": {}}
    assert status.output == Receipt(order_id=9, paid_at=AT, lines=["1.25"])
    [step] = app.steps(handle.workflow_id)
    assert step.output == Decimal("1.25")
    with pgflow.Client(app.settings.database_url) as client:
        assert (
            client.retrieve(handle.workflow_id).status().output["__type__"]
            == "tests.test_serialization_types.Receipt"
        )


def test_pickle_stays_opt_in_and_needs_no_registration(database_url: str) -> None:
    app = pgflow.App("pickled", database_url=database_url, serializer="pickle", types=[Item])
    try:
        assert app.serializer.name == "pickle"
        assert loads_value(
            app.serializer,
            "pickle",
            dumps_value(app.serializer, Order(1, [], AT), max_bytes=1 << 20, what="v"),
        ) == Order(1, [], AT)
    finally:
        app.shutdown(timeout=5)
