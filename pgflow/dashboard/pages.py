"""The dashboard's pages (GET only, for everyone): the overview, the workflow list and one
workflow, the queues, the workers. Each reads through the Client off the event loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ConfigurationError
from ..records import Status
from . import batch, reading
from .chart import throughput_svg
from .views import error_view, parse_filters, timeline

if TYPE_CHECKING:
    from .app import Dashboard


class Pages:
    """The read-only pages of one dashboard."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard

    async def overview(self, request: Request) -> Response:
        d = self.d
        # Four independent reads, at once (each on its own pooled connection).
        (queues, stranded), counts, flow, workers = await asyncio.gather(
            d.read(d.client.queue_report),
            d.read(lambda: reading.status_counts(d.client)),
            d.read(lambda: reading.throughput(d.client)),
            d.read(d.client.workers),
        )
        live = request.headers.get("HX-Request") == "true"
        return d.render(
            request,
            "overview_live.html" if live else "overview.html",
            counts=counts,
            queues=queues,
            stranded=stranded,
            throughput=flow,
            chart=throughput_svg(flow.succeeded, flow.failed),
            workers=[w for w in workers if w.alive],
            statuses=[s.value for s in Status],
        )

    async def workflows(self, request: Request) -> Response:
        d = self.d
        try:
            filters, before = parse_filters(request.query_params)
        except ValueError as exc:
            return d.render(request, "error.html", 400, title="Bad filter", detail=str(exc))
        page = await d.read(lambda: reading.list_page(d.client, filters, before))
        params = [
            (k, v)
            for k, v in request.query_params.multi_items()
            if k not in ("before", "msg") and v
        ]
        # Whether "cancel / resume all matching" can take this filter (None), or why not.
        refusals: dict[str, str | None] = {}
        for action in batch.ACTIONS.values():
            try:
                batch.matching(action, filters)
                refusals[action] = None
            except ConfigurationError as exc:
                refusals[action] = str(exc)
        return d.render(
            request,
            "workflows.html",
            page=page,
            filters=filters,
            statuses=[s.value for s in Status],
            query=dict(params),
            back=urlencode(params),
            refusals=refusals,
            older=page.next_before and urlencode([*params, ("before", page.next_before)]),
            further=page.searched_to and urlencode([*params, ("before", page.searched_to)]),
        )

    async def workflow(self, request: Request) -> Response:
        d = self.d
        workflow_id = request.path_params["workflow_id"]

        def read() -> dict[str, Any] | None:
            found = d.client.retrieve_status(workflow_id)
            if found is None:
                return None
            steps = d.client.steps(workflow_id)
            waiting = found.status in (Status.ENQUEUED, Status.PENDING)
            return {
                "w": found,
                "steps": steps,
                "timeline": timeline(found, steps),
                "children": reading.child_tree(d.client, workflow_id),
                "events": reading.events(d.client, workflow_id),
                "error": error_view(found.error),
                "explain": d.client.explain(workflow_id) if waiting else None,
            }

        found = await d.read(read)
        if found is None:
            return d.render(
                request,
                "error.html",
                404,
                title="No such workflow",
                detail=f"no workflow has id {workflow_id!r}",
            )
        return d.render(request, "workflow.html", **found)

    async def queues(self, request: Request) -> Response:
        queues, stranded = await self.d.read(self.d.client.queue_report)
        return self.d.render(request, "queues.html", queues=queues, stranded=stranded)

    async def workers(self, request: Request) -> Response:
        d = self.d
        found, dead = await asyncio.gather(d.read(d.client.workers), d.read(d.client.dead_workers))
        return d.render(request, "workers.html", workers=found, dead=dead)
