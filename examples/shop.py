"""A tiny shop: a checkout workflow with a transaction step and a retried step, on a queue.

Run it (embedded Postgres when PGFLOW_DATABASE_URL is unset):

    python -m examples.shop 20              # enqueue 20 checkouts
    pgflow worker -A examples.shop --burst  # run them, exit when the queue is empty
"""

from __future__ import annotations

import random
import sys

import pgflow

app = pgflow.App("shop")
payments = app.queue("payments", concurrency=10, worker_concurrency=4)


@app.transaction()
def reserve(order_id: int) -> bool:
    """Reserve stock; commits together with its checkpoint, exactly once."""
    cur = pgflow.db()
    cur.execute("SELECT %s::int %% 7 <> 0 AS ok", (order_id,))
    row = cur.fetchone()
    return bool(row["ok"]) if row else False


@app.step(retries=3, interval=0.05, backoff=2.0)
def charge(card: str, cents: int) -> str:
    """Charge a card; flaky on purpose, retried with backoff."""
    if random.random() < 0.2:
        raise ConnectionError("payment gateway timed out")
    return f"ch_{card[-4:]}_{cents}"


@app.workflow(max_recovery_attempts=5)
def checkout(order_id: int, card: str) -> dict[str, object]:
    if not reserve(order_id):
        return {"order": order_id, "status": "out of stock"}
    receipt = charge(card, 500)
    return {"order": order_id, "status": "paid", "receipt": receipt}


def main(count: int) -> None:
    handles = payments.enqueue_many(checkout, [(i, "4242424242424242") for i in range(count)])
    print(
        f"enqueued {len(handles)} checkouts on queue 'payments'; "
        "run: pgflow worker -A examples.shop --burst"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
