"""Calls a type checker must accept, and calls it must refuse, on pgflow's public API.

Never run: tests/test_typing.py checks it with ``mypy --strict --warn-unused-ignores``. Each
wrong call carries ``# type: ignore[code]`` for the error it must raise, so a wrong call that
stops being an error (an unused ignore) fails the test, and so does a right call that becomes
one. The file name does not start with ``test_``: pytest does not collect it.
"""

from __future__ import annotations

from typing import Any

import pgflow

app = pgflow.App("typing")
payments = app.queue("payments", priority_enabled=True, concurrency=2)


@app.step(retries=3)
def charge(card: str, cents: int) -> str:
    return f"{card}:{cents}"


@app.workflow()
def checkout(ticket_id: int, card: str) -> bool:
    charge(card, 500)
    return ticket_id > 0


def right_calls() -> None:
    h = payments.enqueue(checkout, 7, "4242")
    done: bool = h.result(timeout=1.0)
    by_kw = payments.options(priority=1, dedup_id="order-7").enqueue(
        checkout, ticket_id=7, card="4242"
    )
    done = by_kw.result()
    status: pgflow.WorkflowStatus = h.status()
    workflow_id: str = h.workflow_id

    started: pgflow.WorkflowHandle[bool] = app.start(checkout, 7, card="4242")
    done = started.result()
    done = app.options(workflow_id="checkout-7").start(checkout, 7, "4242").result()
    done = app.options(timeout=60).call(checkout, 7, "4242")
    done = checkout(7, "4242")  # the decorated function keeps its signature
    many = payments.enqueue_many(checkout, [(1, "4242"), {"ticket_id": 2, "card": "4242"}])
    done = many[0].result()
    receipt: str = charge("4242", 500)

    # By name, or from an id: nothing to check, and the result is Any.
    anything: Any = payments.enqueue("checkout", 7, "4242").result()
    anything = app.start("checkout", "no", "check").result()
    anything = app.options().call("checkout", 7)
    anything = app.retrieve("checkout-7").result()
    anything = (
        pgflow.Client("postgresql://localhost/shop")
        .enqueue("payments", "checkout", 7, "4242")
        .result()
    )
    print(done, status, workflow_id, receipt, anything)


def wrong_calls() -> None:
    # Through the overloads (a function or a name) mypy reports call-overload.
    payments.enqueue(checkout, "7", "4242")  # type: ignore[call-overload]
    payments.enqueue(checkout, 7)  # type: ignore[call-overload]
    payments.enqueue(checkout, 7, "4242", coupon="X")  # type: ignore[call-arg]
    payments.options(priority=1).enqueue(checkout, 7, 4242)  # type: ignore[call-overload]
    payments.enqueue(42)  # type: ignore[call-overload]
    app.start(checkout, 7, None)  # type: ignore[call-overload]
    app.options(workflow_id="x").start(checkout)  # type: ignore[call-overload]
    app.options().call(checkout, ticket_id="7", card="4242")  # type: ignore[call-overload]
    checkout("7", "4242")  # type: ignore[arg-type]
    checkout(7)  # type: ignore[call-arg]
    charge("4242", "500")  # type: ignore[arg-type]
    payments.options(priority="high")  # type: ignore[arg-type]
    app.queue("q", priority_enabled="yes")  # type: ignore[arg-type]

    # The result has the workflow's return type, not Any.
    queued: str = payments.enqueue(checkout, 7, "4242").result()  # type: ignore[assignment]
    started: str = app.start(checkout, 7, "4242").result()  # type: ignore[assignment]
    called: str = app.options().call(checkout, 7, "4242")  # type: ignore[assignment]
    handles: list[pgflow.WorkflowHandle[str]] = []
    handles = payments.enqueue_many(checkout, [])  # type: ignore[arg-type]
    print(queued, started, called, handles)
