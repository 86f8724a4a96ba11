"""What OpenTelemetry costs a step (pgflow/tracing.py), in three modes, in one process.

- ``off``: ``tracing.ENABLED`` false, as without the ``otel`` extra (each hook one flag test);
- ``api``: opentelemetry-api installed but no SDK configured (spans are the API's no-ops);
- ``sdk``: the SDK, every span sampled and kept by an in-memory exporter.

Like ``benchmarks.steps``: workflows are plain calls in this process (durable, inline), a step
costs (t(10 steps) - t(0 steps)) / 10, and the modes alternate in rounds so that drift in the
machine's speed weighs on them alike. Also the hooks alone, without the database (ns a call).
It makes its own fresh database (pgflow.testing.database) and drops it.

    python -m benchmarks.tracing [--workflows 300] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pgflow
from pgflow import tracing
from pgflow.records import Claimed
from pgflow.testing import database, use_database

MODES = ("off", "api", "sdk")

app = pgflow.App("bench-tracing")
bench = app.queue("bench")  # never served: the claims' rows


@app.step()
def noop_step(i: int) -> int:
    return i


@app.workflow()
def zero_steps(i: int) -> int:
    return i


@app.workflow()
def ten_steps(i: int) -> int:
    for k in range(10):
        noop_step(k)
    return i


@contextmanager
def mode(name: str) -> Iterator[None]:
    saved = tracing.ENABLED, getattr(tracing, "_TRACER", None)
    provider = None
    if name == "off":
        tracing.ENABLED = False
    elif name == "sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        tracing._TRACER = provider.get_tracer(tracing.TRACER_NAME)
    try:
        yield
    finally:
        tracing.ENABLED, tracing._TRACER = saved  # type: ignore[assignment]
        if provider is not None:
            provider.shutdown()


def timed(fn: Callable[[int], Any], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return time.perf_counter() - t0


def noop() -> None:
    return None


def hooks_ns(n: int = 20_000) -> dict[str, dict[str, float]]:
    """ns a call of each hook adds, without the database: run_step around a no-op body inside
    a workflow's span (as in a run), run_workflow around a no-op body, and capture() inside a
    workflow's span (an enqueue from a workflow or a request)."""
    run = Claimed("w", "wf", "json", "[]", 1)
    found = {}
    for m in MODES:
        with mode(m):
            bare = timed(lambda i: noop(), n)
            step = tracing.run_workflow(
                run, lambda: timed(lambda i: tracing.run_step("w", i, "s", "step", noop), n), (), {}
            )
            workflow = timed(lambda i: tracing.run_workflow(run, noop, (), {}), n)
            capture = tracing.run_workflow(
                run, lambda: timed(lambda i: tracing.capture(), n), (), {}
            )
        found[m] = {
            "run_step_ns": (step - bare) / n * 1e9,
            "run_workflow_ns": (workflow - bare) / n * 1e9,
            "capture_ns": capture / n * 1e9,
        }
    return found


# The harness's own statements (pgflow's go through pgflow): the v2 and v3 claims side by side,
# each in a transaction rolled back, so every call finds the same rows.
CLAIMS = {
    version: f"SELECT * FROM pgflow.claim_limited_{version}(%(executor_id)s, 'bench', "
    "%(app_version)s, %(names)s, 10, 1000, NULL, 0, 'pgflow:bench', false)"
    for version in ("v2", "v3")
}


def claim_us(n: int = 300) -> dict[str, float]:
    """µs per claim of 10 rows from 1,000 waiting (median), by claim_limited_v2 and _v3: the
    one more column v3 returns (NULL here, as without a span at enqueue) costs nothing."""
    bench.enqueue_many(zero_steps, [(i,) for i in range(1000)])
    executor = app.executor
    executor.ensure_registered()
    params = {
        "executor_id": executor.executor_id,
        "app_version": app.app_version,
        "names": sorted(app.registry.workflows),
    }
    times: dict[str, list[float]] = {v: [] for v in CLAIMS}
    with app.db.connect() as conn:
        for _ in range(n):
            for version, statement in CLAIMS.items():
                with conn.transaction(force_rollback=True):
                    t0 = time.perf_counter()
                    rows = conn.execute(statement, params).fetchall()
                    times[version].append(time.perf_counter() - t0)
                    assert len(rows) == 10
    return {f"claim_limited_{v}_us": statistics.median(t) * 1e6 for v, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=300, help="per mode and kind")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    per_round = max(1, args.workflows // args.rounds)
    zero = dict.fromkeys(MODES, 0.0)
    ten = dict.fromkeys(MODES, 0.0)
    step_rounds: dict[str, list[float]] = {m: [] for m in MODES}
    with database() as url, use_database(app, url):
        for m in MODES:  # warm: executor row, pool, prepared statements, span machinery
            with mode(m):
                timed(zero_steps, 20)
                timed(ten_steps, 20)
        for _ in range(args.rounds):
            for m in MODES:
                with mode(m):
                    z = timed(zero_steps, per_round)
                    t = timed(ten_steps, per_round)
                zero[m] += z
                ten[m] += t
                step_rounds[m].append((t - z) / (per_round * 10) * 1e6)
        claims = claim_us()
        app.shutdown()
    n = per_round * args.rounds
    result: dict[str, Any] = {"workflows_per_mode": n, "rounds": args.rounds}
    for m in MODES:
        result[m] = {
            "step_us": (ten[m] - zero[m]) / (n * 10) * 1e6,
            "step_us_median_round": statistics.median(step_rounds[m]),
            "workflow_0_steps_us": zero[m] / n * 1e6,
            "workflow_10_steps_us": ten[m] / n * 1e6,
        }
    result["claims"] = claims
    result["hooks"] = hooks_ns()
    print(json.dumps(result, indent=2))


def hooks_only() -> None:
    """``python -c 'import benchmarks.tracing as b; b.hooks_only()'``: no database."""
    print(json.dumps(hooks_ns(), indent=2))


if __name__ == "__main__":
    main()
