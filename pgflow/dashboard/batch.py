"""The workflow list's batch actions, for an admin: cancel or resume the rows ticked on the
page, or every workflow matching the list's filter. The latter goes through a confirmation
page that shows the count first; its POST carries the filter and the count seen, and runs in
batches (``bulk.cancel_matching`` / ``bulk.resume_matching``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import bulk
from ..errors import ConfigurationError
from .reading import ListFilters

if TYPE_CHECKING:
    from ..client import Client

# A page lists 50 rows; more ids than this in one POST is not a form this dashboard drew.
MAX_SELECTED = 1000
SELECTED: dict[str, bulk.Action] = {"cancel-selected": "cancel", "resume-selected": "resume"}
MATCHING: dict[str, bulk.Action] = {"cancel-matching": "cancel", "resume-matching": "resume"}
PAST = {"cancel": "cancelled", "resume": "resumed"}
ACTIONS: dict[str, bulk.Action] = {"cancel": "cancel", "resume": "resume"}


def matching(action: bulk.Action, filters: ListFilters) -> bulk.Match:
    """The bulk filter of "``action`` all matching" the list's ``filters``: its statuses (only
    those the action applies to), queue and name; no filter at all takes every workflow the
    action applies to. Other filters have no bulk equivalent and are refused."""
    others = {
        "id": filters.id_prefix,
        "dedup id": filters.dedup_id,
        "partition key": filters.partition_key,
        "created from": filters.created_after,
        "created before": filters.created_before,
    }
    given = [label for label, value in others.items() if value is not None]
    if given:
        raise ConfigurationError(
            f"{action} all matching takes the status, name and queue filters only; clear "
            f"{', '.join(given)}, or tick the rows and {action} the selected ones"
        )
    statuses: list[str] | None = None
    if filters.statuses:
        statuses = [s for s in filters.statuses if s in bulk.ALLOWED[action]]
        if not statuses:
            raise ConfigurationError(
                f"{action} applies to {', '.join(bulk.ALLOWED[action])} workflows; the "
                f"filter shows only {', '.join(filters.statuses)}"
            )
    everything = statuses is None and filters.name is None and filters.queue_name is None
    return bulk.match(
        action, status=statuses, queue=filters.queue_name, name=filters.name, everything=everything
    )


def describe(m: bulk.Match) -> str:
    """``m`` in words: "ENQUEUED or PENDING workflows named greet on queue jobs"."""
    text = f"{' or '.join(m.statuses)} workflows"
    if m.name is not None:
        text += f" named {m.name}"
    if m.queue is not None:
        text += f" on queue {m.queue}"
    return text


@dataclass(frozen=True)
class Outcome:
    action: bulk.Action
    result: bulk.BulkResult

    @property
    def message(self) -> str:
        r = self.result
        text = f"{PAST[self.action]} {r.changed} of {r.matched}"
        if r.children:
            text += f", and {r.children} child workflow{'s' if r.children != 1 else ''} with them"
        if r.unchanged:
            text += (
                f"; {r.unchanged} left as {'it was' if r.unchanged == 1 else 'they were'}"
                " (ended, running, or a dedup id taken)"
            )
        return text


def act_on_selected(client: Client, form_action: str, ids: list[str]) -> Outcome:
    """Cancel or resume the ticked workflows, in one statement."""
    action = SELECTED[form_action]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise ConfigurationError("no workflow selected: tick the rows to act on first")
    if len(ids) > MAX_SELECTED:
        raise ConfigurationError(
            f"{len(ids)} workflows selected; at most {MAX_SELECTED} at "
            'once (use "all matching" for more)'
        )
    act = bulk.cancel_ids if action == "cancel" else bulk.resume_ids
    return Outcome(action, act(client.db, ids))


def act_on_matching(client: Client, m: bulk.Match) -> Outcome:
    """Cancel or resume every workflow matching ``m``, in batches."""
    act = bulk.cancel_matching if m.action == "cancel" else bulk.resume_matching
    return Outcome(m.action, act(client.db, m))


def count(client: Client, m: bulk.Match) -> int:
    return bulk.count_matching(client.db, m)
