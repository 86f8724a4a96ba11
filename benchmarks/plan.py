"""How much each benchmark does: the full plan, and a quick one that checks the suite works."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    """Counts and durations of every benchmark (full run: about 10-15 minutes)."""

    # 1. the server's limit (pgbench)
    pgbench_seconds: int = 15
    pgbench_clients: int = 8
    # 2. enqueue
    enqueue_one: int = 10_000
    enqueue_many: int = 50_000
    enqueue_batch: int = 500
    # 3. drain (and 6. flow control, which reuses the best thread count)
    drain_jobs: int = 20_000
    drain_threads: tuple[int, ...] = (4, 8, 16, 32, 64)
    processes: int = 2
    # 4. steady state: 100/s for steady_seconds, then each rate for step_seconds
    steady_seconds: float = 10.0
    step_seconds: float = 5.0
    rates: tuple[int, ...] = (100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
    # 5. steps
    step_workflows: int = 500
    rtt_inserts: int = 2_000
    # 6. flow control
    partition_keys: int = 100
    # 7. backlog
    backlogs: tuple[int, ...] = (1_000, 1_000_000)
    claims: int = 500
    claim_limit: int = 10

    @classmethod
    def full(cls) -> Plan:
        return cls()

    @classmethod
    def quick(cls) -> Plan:
        """Small counts: the whole suite in a minute or two, to check that it works."""
        return replace(
            cls(),
            pgbench_seconds=3,
            enqueue_one=1_000,
            enqueue_many=5_000,
            drain_jobs=3_000,
            drain_threads=(8,),
            steady_seconds=3.0,
            step_seconds=2.0,
            rates=(100, 500, 1000, 2000),
            step_workflows=50,
            rtt_inserts=300,
            partition_keys=20,
            backlogs=(1_000, 100_000),
            claims=100,
        )
