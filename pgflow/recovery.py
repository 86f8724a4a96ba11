"""Dead-owner detection, reaping, adoption of orphaned work and releasing work.

Liveness is judged on the database clock only (the heartbeats are :mod:`pgflow.executor`'s): an
executor is dead when its heartbeat is older
than the timeout by ``now()`` of the server, or at once when it lived on this host and its pid
is gone. Releasing a dead executor's work happens in the transaction that deletes its row, so
exactly one live executor does it however many notice together.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from . import metrics
from .db.notify import queue_channel
from .execution import run_claimed
from .executor import LIVE_HERE

if TYPE_CHECKING:
    from .executor import Executor, ExecutorHost
    from .runtime import Runtime

log = structlog.get_logger("pgflow")

# The record of dead executors keeps the newest this many, none older than this.
KEEP_DEATHS = 100
KEEP_DEATHS_SECONDS = 24 * 3600.0
# Workflows adopted per statement by recover_now.
ADOPT_BATCH = 100


def release_executors(
    host: ExecutorHost,
    executor_ids: list[str],
    *,
    charge: bool,
    workflow_ids: list[str] | None = None,
    me: str | None = None,
) -> list[dict[str, Any]]:
    """Hand back the PENDING work of ``executor_ids`` (charged: a crash; uncharged: a drain)."""
    params = {
        "executor_ids": executor_ids,
        "charge": charge,
        "channel": queue_channel(host.db.schema),
        "workflow_ids": workflow_ids,
    }
    rows = host.db.retrying(lambda: host.db.fetchall("release_executor_work", params))
    for r in rows:
        log.info(
            "workflow_released", workflow_id=r["workflow_id"], status=r["status"], charged=charge
        )
    host.completions.notify()
    return rows


def reap_dead_executors(
    host: ExecutorHost,
    me: str,
    dead_ids: list[str],
    *,
    judge_heartbeats: bool = True,
    healthy_since: datetime | None = None,
) -> list[str]:
    """Delete dead executors' rows and release their work, in one transaction, recording
    each death (``executor_deaths``: shown by ``pgflow workers`` as "died recently").

    ``dead_ids`` are dead for sure (their pid is gone). With ``judge_heartbeats``, executors
    whose heartbeat expired go too; ``healthy_since`` (the database time since which the
    reaper has heartbeat without a break) limits that judgement to time the reaper saw whole,
    so after an outage (a server restart, a cut network) nobody is reaped for not beating
    while nobody could: each gets the full timeout to reconnect. The executors of this very
    process are alive whatever their heartbeats say (a test's clock may have jumped)."""
    statuses: list[str] = []  # of the released workflows, once committed

    def attempt() -> list[str]:
        statuses.clear()
        with host.db.connection() as conn, conn.transaction():
            rows = host.db.execute(
                conn,
                "claim_dead_executors",
                {
                    "executor_id": me,
                    "alive_ids": sorted(LIVE_HERE.ids()),
                    "dead_ids": dead_ids,
                    "healthy_since": healthy_since,
                    "timeout_s": host.settings.heartbeat_timeout if judge_heartbeats else None,
                    "keep_deaths": KEEP_DEATHS,
                    "keep_deaths_s": KEEP_DEATHS_SECONDS,
                },
            ).fetchall()
            ids = [r["executor_id"] for r in rows]
            if ids:
                released = host.db.execute(
                    conn,
                    "release_executor_work",
                    {
                        "executor_ids": ids,
                        "charge": True,
                        "channel": queue_channel(host.db.schema),
                        "workflow_ids": None,
                    },
                ).fetchall()
                log.info("dead_executors_reaped", executors=ids, released=len(released))
                statuses[:] = [r["status"] for r in released]
            return ids

    ids = host.db.retrying(attempt)
    metrics.recovered(statuses)
    if ids:
        host.completions.notify()
    return ids


def reap_dead(host: ExecutorHost, executor: Executor) -> list[str]:
    """As ``executor``, reap executors that are dead (pid gone here, or heartbeat expired
    anywhere, judged over the time ``executor`` has beaten without a break)."""
    return reap_dead_executors(
        host,
        executor.executor_id,
        executor.dead_on_this_host(),
        judge_heartbeats=executor.healthy_since is not None,
        healthy_since=executor.healthy_since,
    )


def recover_now(rt: Runtime) -> int:
    """Reap dead executors and run every ownerless PENDING workflow of this version on a
    thread of this process; returns how many were adopted."""
    # Only a registered (heartbeating) executor may own work: should it die, its row is how
    # others find and recover what it held.
    executor = rt.executor
    executor.ensure_registered()
    reap_dead(rt, executor)
    adopted = 0
    while True:
        batch = executor.adopt(ADOPT_BATCH)
        for claimed in batch:
            log.info(
                "workflow_recovered",
                workflow_id=claimed.workflow_id,
                workflow_name=claimed.name,
                attempt=claimed.attempt,
            )
            rt.spawn(functools.partial(run_claimed, rt, claimed))
        adopted += len(batch)
        if len(batch) < ADOPT_BATCH:
            return adopted
