"""The version registry: which application versions exist, what each knows, what each holds.

Every executor records its version and the workflow names it knows when it registers. A
workflow that never started has no checkpoints, so any version that knows its name may start
it; one that started runs only on its own version. This module answers the questions around
that rule: may this name be enqueued (does any version know it), which versions are there, why
is work left (unknown name, wrong version, no worker), and it moves stranded work from one
version to another (``pgflow workflows retarget``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .db.notify import queue_channel
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .db.pool import Database

RETARGET_BATCH = 5_000
# What retarget moves unless told otherwise: work waiting to run (PENDING only when ownerless).
WAITING = ("ENQUEUED", "PENDING")


@dataclass(frozen=True)
class VersionInfo:
    """One application version: when it was seen, who runs it, what it holds."""

    app_version: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    live_executors: int
    workflows: int  # workflow names it registered
    work: dict[str, int]  # workflows per status


def list_versions(db: Database, heartbeat_timeout: float) -> list[VersionInfo]:
    """The registry, with versions that appear only on rows (``None``: enqueued without one)."""
    return [
        VersionInfo(
            r["app_version"],
            r["first_seen"],
            r["last_seen"],
            int(r["live_executors"]),
            int(r["workflows"]),
            {k: int(v) for k, v in (r["work"] or {}).items()},
        )
        for r in db.fetchall("list_versions", {"timeout_s": heartbeat_timeout})
    ]


def live_versions(db: Database, heartbeat_timeout: float) -> list[str]:
    """Versions with a live executor, newest first."""
    return [
        r["app_version"] for r in db.fetchall("live_versions", {"timeout_s": heartbeat_timeout})
    ]


def check_enqueue(db: Database, workflow_name: str, app_version: str | None) -> str | None:
    """Check an enqueue by name: why no registered version could run ``workflow_name`` (of
    ``app_version``, when given), or None when one could."""
    rows = db.fetchall("registered_versions")
    known = {r["app_version"]: set(r["workflow_names"]) for r in rows}
    if app_version is not None and app_version not in known:
        return (
            f"no worker ever ran app_version {app_version!r} (registered: "
            f"{', '.join(sorted(known)) or 'none'}); only a queue with strict_versions "
            "keeps the workflow to that version, any other lets any version that knows "
            "its name start it"
        )
    if app_version is not None:
        if workflow_name in known[app_version]:
            return None
        return f"version {app_version} does not know workflow {workflow_name!r}"
    if any(workflow_name in names for names in known.values()):
        return None
    if not known:
        return (
            f"no worker has registered yet, so no version is known to define workflow "
            f"{workflow_name!r}; it waits until a worker that knows it starts"
        )
    return (
        f"no registered version knows workflow {workflow_name!r} (versions: "
        f"{', '.join(sorted(known))}); check the name (`pgflow versions` lists versions), "
        "or deploy code that defines it"
    )


def remedy(
    reason: str, queue_name: str | None, app_version: str | None, name: str, live: Iterable[str]
) -> str:
    """What resolves one kind of stranded work, naming the command."""
    if reason == "unknown_name":
        return (
            f"no registered version knows workflow {name!r}: deploy code that defines it, "
            "or cancel them (`pgflow workflows cancel ID`)"
        )
    if reason == "wrong_version":
        to = next(iter(live), None)
        target = f"--to {to}" if to else "--to VERSION"
        return (
            f"they started on version {app_version}, which no live worker runs: run a "
            f"worker of that version, or `pgflow workflows retarget --from {app_version} "
            f"{target}`"
        )
    where = f"queue {queue_name!r}" if queue_name else "it"
    return (
        f"no live worker that knows workflow {name!r} serves {where}: start one "
        f"(`pgflow worker -A MODULE{' -Q ' + queue_name if queue_name else ''}`)"
    )


def count_retarget(db: Database, from_version: str | None, statuses: Iterable[str]) -> int:
    row = db.fetchone("count_retarget", {"from_version": from_version, "statuses": list(statuses)})
    return int(row["n"]) if row else 0


def retarget(
    db: Database,
    from_version: str | None,
    to_version: str,
    statuses: Iterable[str] = WAITING,
    *,
    batch: int = RETARGET_BATCH,
) -> int:
    """Move workflows of ``from_version`` (None: rows without a version) in the given
    statuses to ``to_version``, keeping their ids, in batches (short locks). PENDING rows are
    moved only when ownerless. Returns how many moved."""
    if from_version == to_version:
        raise ConfigurationError("retarget: --from and --to are the same version")
    params: dict[str, Any] = {
        "from_version": from_version,
        "to_version": to_version,
        "statuses": list(statuses),
        "limit": batch,
        "channel": queue_channel(db.schema),
    }
    moved = 0
    while True:
        row = db.retrying(lambda: db.fetchone("retarget_batch", params))
        n = int(row["n"]) if row else 0
        moved += n
        if n < batch:
            return moved
