"""What the dashboard's pages read that the Client does not already offer: the overview's
counts and per-minute throughput, one keyset page of the workflow list, a workflow's events.
Each is a named statement of ``sql/queries/dashboard.sql`` with a bounded cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..records import Status

if TYPE_CHECKING:
    from ..client import Client

# Past this many rows (the planner's estimate) the SUCCESS count is estimated, not counted.
EXACT_COUNT_LIMIT = 200_000
# The chart reads the newest this many workflows (by seq) for what ended in the last hour.
THROUGHPUT_SAMPLE = 50_000
# A filtered page of the list walks at most this many rows before offering to search further.
SCAN_BUDGET = 50_000
PAGE_SIZE = 50


@dataclass(frozen=True)
class StatusCounts:
    counts: dict[str, int]
    estimated: frozenset[str]  # the statuses whose count is the planner's estimate


@dataclass(frozen=True)
class Throughput:
    """Workflows that ended per minute over the last hour: ``succeeded[i]`` and ``failed[i]``
    ended ``i`` minutes ago; ``partial`` when the sample did not reach back an hour."""

    succeeded: list[int]
    failed: list[int]
    partial: bool
    sampled: int


@dataclass(frozen=True)
class ListFilters:
    statuses: list[str] | None = None
    name: str | None = None
    queue_name: str | None = None
    id_prefix: str | None = None
    dedup_id: str | None = None
    partition_key: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in self.__dict__.values())


@dataclass(frozen=True)
class ListPage:
    rows: list[dict[str, Any]]
    next_before: int | None  # the cursor of the next (older) page; None: no older rows
    searched_to: int | None  # a bounded walk stopped at this seq without filling the page
    exact: dict[str, Any] | None = None  # the workflow whose id is the id filter, whatever its age


def status_counts(client: Client) -> StatusCounts:
    db = client.db
    row = db.fetchone("dashboard_table_estimate", {"schema": db.schema})
    estimate = float(row["estimate"]) if row is not None else -1.0
    counts = dict.fromkeys((s.value for s in Status), 0)
    if estimate < EXACT_COUNT_LIMIT:
        for r in db.fetchall("dashboard_status_counts"):
            counts[r["status"]] = int(r["n"])
        return StatusCounts(counts, frozenset())
    for r in db.fetchall("dashboard_unfinished_counts"):
        counts[r["status"]] += int(r["n"])
    counts[Status.SUCCESS.value] = max(0, int(estimate) - sum(counts.values()))
    return StatusCounts(counts, frozenset({Status.SUCCESS.value}))


def throughput(client: Client) -> Throughput:
    succeeded, failed = [0] * 60, [0] * 60
    partial, sampled = False, 0
    for r in client.db.fetchall("dashboard_throughput", {"sample": THROUGHPUT_SAMPLE}):
        sampled = int(r["sampled"])
        # The sample is cut short when it is full and its oldest row is less than an hour old.
        if r["sample_from"] is not None and sampled >= THROUGHPUT_SAMPLE:
            partial = (r["now"] - r["sample_from"]).total_seconds() < 3600
        ago = r["ago"]
        if ago is not None and 0 <= ago < 60:
            succeeded[ago] += int(r["succeeded"])
            failed[ago] += int(r["failed"])
    return Throughput(succeeded, failed, partial, sampled)


def list_page(
    client: Client, filters: ListFilters, before: int | None, limit: int = PAGE_SIZE
) -> ListPage:
    """One page of the list, newest first, below the cursor ``before``. A filter walks at most
    SCAN_BUDGET rows; an id filter that is a whole id also finds that workflow by its primary
    key, however old (on the first page, as ``exact``, and not again among ``rows``)."""
    db = client.db
    budget = SCAN_BUDGET if filters.any else limit
    params = {**filters.__dict__, "before": before, "budget": budget, "limit": limit}
    rows = db.fetchall("dashboard_list_workflows", params)
    exact = None
    if filters.id_prefix is not None and before is None:
        exact = db.fetchone("dashboard_workflow_by_id", params)
    shown = rows if exact is None else [r for r in rows if r["workflow_id"] != exact["workflow_id"]]
    if len(rows) == limit:
        return ListPage(shown, rows[-1]["seq"], None, exact)
    if not filters.any:
        return ListPage(shown, None, None, exact)
    floor = db.fetchone("dashboard_scan_floor", {"before": before, "budget": budget})
    return ListPage(shown, None, None if floor is None else int(floor["seq"]), exact)


def events(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """A workflow's events, each value decoded (or ``<not decodable: ...>``)."""
    found = []
    for r in client.db.fetchall("dashboard_events", {"workflow_id": workflow_id}):
        try:
            value = serialization.loads_value(client.serializer, r["serializer"], r["value"])
        except Exception as exc:
            value = f"<not decodable: {exc}>"
        found.append({"key": r["key"], "value": value, "updated_at": r["updated_at"]})
    return found


@dataclass(frozen=True)
class ChildTree:
    """A workflow's descendants (its call graph) as nested nodes, each a dict with
    ``workflow_id``, ``name``, ``status``, ``depth`` and ``children``; ``more`` descendants
    were not read (``more_capped``: at least that many), past TREE_NODES nodes or TREE_DEPTH
    levels; ``shown`` is how many nodes are in the tree."""

    roots: list[dict[str, Any]]
    shown: int
    more: int
    more_capped: bool
    limit: int = 0  # the bounds it was read with
    depth: int = 0


# The workflow page's call graph reads at most this many descendants, this many levels deep.
TREE_NODES = 200
TREE_DEPTH = 10
# "n more" counts the unread children of the last level read up to this many.
TREE_COUNT_CAP = 10_000


def child_tree(
    client: Client, workflow_id: str, nodes: int | None = None, depth: int | None = None
) -> ChildTree:
    """``workflow_id``'s descendants, level by level (one bounded statement per level), at
    most ``nodes`` of them and ``depth`` levels deep (default TREE_NODES, TREE_DEPTH); then
    how many more children the last level read has."""
    nodes = TREE_NODES if nodes is None else nodes
    depth = TREE_DEPTH if depth is None else depth
    db = client.db
    found: list[dict[str, Any]] = []
    parents, level, more = [workflow_id], 1, 0
    while parents:
        room = nodes - len(found)
        rows = db.fetchall("dashboard_children", {"parents": parents, "limit": room + 1})
        if level > depth or len(rows) > room:
            # Past a bound: what this level holds beyond the room, counted (capped).
            total = db.fetchone(
                "dashboard_children_count", {"parents": parents, "cap": TREE_COUNT_CAP}
            )
            kept = [] if level > depth else rows[:room]
            more = int(total["n"]) - len(kept) if total is not None else 0
            found += [{**r, "depth": level} for r in kept]
            break
        found += [{**r, "depth": level} for r in rows]
        parents, level = [r["workflow_id"] for r in rows], level + 1
    nested = _nest(workflow_id, found)
    return ChildTree(nested, len(found), more, more >= TREE_COUNT_CAP, nodes, depth)


def _nest(root: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flat rows as a tree under ``root``, each level in the order its rows were made."""
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["seq"]):
        by_parent.setdefault(r["parent_workflow_id"], []).append(r)

    seen = {root}  # a hand-edited cycle of parents is shown once, not followed forever

    def build(parent: str) -> list[dict[str, Any]]:
        level = [r for r in by_parent.get(parent, []) if r["workflow_id"] not in seen]
        seen.update(r["workflow_id"] for r in level)
        return [{**r, "children": build(r["workflow_id"])} for r in level]

    return build(root)
