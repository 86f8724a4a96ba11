"""The dashboard's ASGI application: Starlette routes rendering Jinja2 templates (autoescaped),
htmx for the overview's live refresh, and POST actions for a logged-in admin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import tables
from ..bulk import BATCH, Match
from ..client import Client
from ..errors import ConfigurationError, PgflowError, UnknownWorkflow
from ..records import Status
from ..redaction import redact, redact_value
from ..serialization import recorded_traceback
from ..settings import Settings
from . import batch, reading
from .chart import throughput_svg
from .security import COOKIE, SESSION_SECONDS, Sessions

HERE = os.path.dirname(__file__)
SHOW_CHARS = 2000  # longer values show their start, with the rest behind "show all"
SECURITY_HEADERS = {
    # Scripts only from the dashboard's own static files: a value that escaped the
    # templates' escaping still could not run.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    admin_token: str | None = None,
    app_spec: str | None = None,
    settings: Settings | None = None,
    refresh_seconds: float = 5.0,
) -> Starlette:
    """The dashboard as an ASGI application, to serve (``pgflow dashboard``) or to mount in
    an existing Starlette or FastAPI app::

        app.mount("/pgflow", create_app(url, admin_token=os.environ["PGFLOW_DASHBOARD_TOKEN"]))

    ``database_url``: else the App's (``app_spec``, ``pkg.module[:attribute]``), else
    ``PGFLOW_DATABASE_URL``; ``schema`` defaults to ``pgflow``. Read-only unless
    ``admin_token`` is given; then an admin logs in with it to cancel, resume and fork
    workflows and to pause and resume queues. The overview refreshes every
    ``refresh_seconds`` while its tab is visible.
    """
    if settings is None:
        if app_spec:
            from ..loader import load_app

            settings = load_app(app_spec).settings
        else:
            settings = Settings.from_env()
    changes = {
        k: v for k, v in {"database_url": database_url, "schema": schema}.items() if v is not None
    }
    settings = settings.replace(**changes) if changes else settings
    if not settings.database_url:
        raise ConfigurationError(
            "the dashboard needs a database URL: pass it, or set "
            "PGFLOW_DATABASE_URL, or name the app (-A)"
        )
    dashboard = Dashboard(Client(settings=settings), admin_token or None, refresh_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.client.close()

    return Starlette(routes=dashboard.routes(), lifespan=lifespan)


class Dashboard:
    """The pages and actions, over one Client."""

    def __init__(
        self, client: Client, admin_token: str | None, refresh_seconds: float = 5.0
    ) -> None:
        self.client = client
        self.refresh_seconds = refresh_seconds
        self.sessions = Sessions(admin_token) if admin_token else None
        self.target = redact(client.settings.database_url or "")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(shown=shown, when=when, duration=tables.duration)

    def routes(self) -> list[BaseRoute]:
        pages: Sequence[tuple[str, Callable[[Request], Any]]] = (
            ("/", self.overview),
            ("/workflows", self.workflows),
            ("/workflows/{workflow_id:path}", self.workflow),
            ("/queues", self.queues),
            ("/workers", self.workers),
            ("/login", self.login_form),
            ("/batch/{action}", self.batch_confirm),
        )
        return [
            *(Route(path, page, methods=["GET"]) for path, page in pages),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/actions/{action}", self.act, methods=["POST"]),
            # /metrics and /healthz (issue 15, section 2) are mounted here, beside the pages.
            Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
        ]

    # -- rendering -----------------------------------------------------------------------------

    def _session(self, request: Request) -> str | None:
        cookie = request.cookies.get(COOKIE)
        return cookie if self.sessions is not None and self.sessions.valid(cookie) else None

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        session = self._session(request)
        html = self.env.get_template(template).render(
            base=request.scope.get("root_path", ""),
            path=request.url.path,
            admin_configured=self.sessions is not None,
            admin=session is not None,
            csrf=self.sessions.csrf_token(session) if self.sessions and session else "",
            target=self.target,
            message=request.query_params.get("msg"),
            refresh_ms=max(100, int(self.refresh_seconds * 1000)),
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    async def _read(self, fn: Callable[[], Any]) -> Any:
        return await run_in_threadpool(fn)

    # -- pages ---------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        # Four independent reads, at once (each on its own pooled connection).
        (queues, stranded), counts, flow, workers = await asyncio.gather(
            self._read(self.client.queue_report),
            self._read(lambda: reading.status_counts(self.client)),
            self._read(lambda: reading.throughput(self.client)),
            self._read(self.client.workers),
        )
        live = request.headers.get("HX-Request") == "true"
        return self.render(
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
        try:
            filters, before = parse_filters(request.query_params)
        except ValueError as exc:
            return self.render(request, "error.html", 400, title="Bad filter", detail=str(exc))
        page = await self._read(lambda: reading.list_page(self.client, filters, before))
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
        return self.render(
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
        workflow_id = request.path_params["workflow_id"]

        def read() -> dict[str, Any] | None:
            found = self.client.retrieve_status(workflow_id)
            if found is None:
                return None
            steps = self.client.steps(workflow_id)
            waiting = found.status in (Status.ENQUEUED, Status.PENDING)
            return {
                "w": found,
                "steps": steps,
                "timeline": timeline(found, steps),
                "children": self.client.list_workflows(parent_workflow_id=workflow_id, limit=200),
                "events": reading.events(self.client, workflow_id),
                "error": error_view(found.error),
                "explain": self.client.explain(workflow_id) if waiting else None,
            }

        found = await self._read(read)
        if found is None:
            return self.render(
                request,
                "error.html",
                404,
                title="No such workflow",
                detail=f"no workflow has id {workflow_id!r}",
            )
        return self.render(request, "workflow.html", **found)

    async def queues(self, request: Request) -> Response:
        queues, stranded = await self._read(self.client.queue_report)
        return self.render(request, "queues.html", queues=queues, stranded=stranded)

    async def workers(self, request: Request) -> Response:
        found, dead = await asyncio.gather(
            self._read(self.client.workers), self._read(self.client.dead_workers)
        )
        return self.render(request, "workers.html", workers=found, dead=dead)

    async def batch_confirm(self, request: Request) -> Response:
        """ "Cancel / resume all matching": the count first, with the form that does it."""
        action = batch.ACTIONS.get(request.path_params["action"])
        if self._session(request) is None:
            return self._refused(request, "batch actions are for a logged-in admin")
        if action is None:
            return self.render(
                request,
                "error.html",
                404,
                title="Unknown action",
                detail="the batch actions are cancel and resume",
            )
        try:
            filters, _ = parse_filters(request.query_params)
            m = batch.matching(action, filters)
        except (ValueError, ConfigurationError) as exc:
            return self.render(
                request, "error.html", 400, title="Not a batch filter", detail=str(exc)
            )
        found = await self._read(lambda: batch.count(self.client, m))
        back = urlencode(
            [
                (k, v)
                for k, v in request.query_params.multi_items()
                if k not in ("before", "msg") and v
            ]
        )
        return self._confirm(request, m, filters, found, back)

    def _confirm(
        self,
        request: Request,
        m: Match,
        filters: reading.ListFilters,
        count: int,
        back: str,
        seen: int | None = None,
    ) -> Response:
        return self.render(
            request,
            "batch.html",
            action=m.action,
            count=count,
            seen=seen,
            described=batch.describe(m),
            filters=filters,
            back=back,
            batch_size=BATCH,
        )

    # -- admin: login and actions --------------------------------------------------------------

    def _refused(self, request: Request, detail: str) -> Response:
        return self.render(request, "error.html", 403, title="Refused", detail=detail)

    def _same_origin(self, request: Request) -> bool:
        """A browser names the page a POST comes from; it must be this dashboard's host."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host")

    async def login_form(self, request: Request) -> Response:
        if self.sessions is None:
            return self.render(
                request,
                "error.html",
                404,
                title="Read-only dashboard",
                detail="no admin token is configured: this dashboard only reads",
            )
        return self.render(request, "login.html")

    async def login(self, request: Request) -> Response:
        if self.sessions is None or not self._same_origin(request):
            return self._refused(request, "this dashboard is read-only")
        form = await request.form()
        given = form.get("token")
        if not isinstance(given, str) or not self.sessions.token_matches(given):
            return self.render(request, "login.html", 403, failed=True)
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/", status_code=303)
        response.set_cookie(
            COOKIE,
            self.sessions.new_session(),
            max_age=SESSION_SECONDS,
            path=f"{base}/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/", status_code=303)
        response.delete_cookie(COOKIE, path=f"{base}/")
        return response

    async def act(self, request: Request) -> Response:
        if self.sessions is None:
            return self._refused(
                request, "this dashboard is read-only: no admin token is configured"
            )
        form = await request.form()
        session = self._session(request)
        csrf = form.get("csrf")
        if session is None:
            return self._refused(request, "log in first")
        if not self._same_origin(request) or not self.sessions.csrf_valid(
            session, csrf if isinstance(csrf, str) else None
        ):
            return self._refused(
                request, "the form's CSRF token is missing or wrong; reload the page and try again"
            )
        action = request.path_params["action"]
        fields = ImmutableMultiDict([(k, v) for k, v in form.multi_items() if isinstance(v, str)])
        base = request.scope.get("root_path", "")
        try:
            if action in batch.SELECTED or action in batch.MATCHING:
                return await self._batch(request, action, fields)
            where, message = await self._read(lambda: self._perform(action, fields))
        except KeyError:
            return self.render(
                request, "error.html", 404, title="Unknown action", detail=f"no action {action!r}"
            )
        except UnknownWorkflow as exc:
            return self.render(request, "error.html", 404, title="Not found", detail=str(exc))
        except PgflowError as exc:
            return self.render(
                request, "error.html", 409, title="Not done", detail=redact(str(exc))
            )
        return RedirectResponse(f"{base}{where}?{urlencode({'msg': message})}", 303)

    async def _batch(
        self, request: Request, action: str, form: ImmutableMultiDict[str, str]
    ) -> Response:
        """Cancel or resume the ticked rows, or all matching a filter whose count was seen;
        then back to the list as it was filtered."""
        # Only a query string for the list page is taken back, re-encoded.
        back = [(k, v) for k, v in parse_qsl(form.get("back") or "") if k != "msg"]
        if action in batch.SELECTED:
            ids = form.getlist("workflow_id")
            outcome = await self._read(lambda: batch.act_on_selected(self.client, action, ids))
        else:
            try:
                filters, _ = parse_filters(form)
                seen = int(form.get("seen") or "")
            except ValueError as exc:
                return self.render(
                    request, "error.html", 400, title="Bad batch form", detail=str(exc)
                )
            m = batch.matching(batch.MATCHING[action], filters)
            now = await self._read(lambda: batch.count(self.client, m))
            if now > seen:  # more than the admin agreed to: show the new count first
                return self._confirm(request, m, filters, now, urlencode(back), seen)
            outcome = await self._read(lambda: batch.act_on_matching(self.client, m))
        base = request.scope.get("root_path", "")
        return RedirectResponse(
            f"{base}/workflows?{urlencode([*back, ('msg', outcome.message)])}", 303
        )

    def _perform(self, action: str, form: ImmutableMultiDict[str, str]) -> tuple[str, str]:
        """Do ``action``; return the page to go back to and what was done."""
        c = self.client
        if action in ("pause-queue", "resume-queue"):
            queue = form["queue"]
            changed = c.pause_queue(queue) if action == "pause-queue" else c.resume_queue(queue)
            verb = "paused" if action == "pause-queue" else "resumed"
            return (
                "/queues",
                f"queue {queue} {verb}" if changed else f"queue {queue} was already {verb}",
            )
        workflow_id = form["workflow_id"]
        page = f"/workflows/{quote(workflow_id, safe='')}"
        if action == "cancel":
            return page, f"cancel requested: now {c.cancel(workflow_id).status}"
        if action == "resume":
            c.resume(workflow_id)
            return page, "resumed"
        if action == "fork":
            try:
                step = int(form.get("from_step") or "1")
            except ValueError:
                raise ConfigurationError("from_step must be a step number") from None
            new = c.fork(workflow_id, step).workflow_id
            return f"/workflows/{quote(new, safe='')}", f"forked from {workflow_id} at step {step}"
        raise KeyError(action)


# -- helpers for the templates -----------------------------------------------------------------


def parse_filters(query: Any) -> tuple[reading.ListFilters, int | None]:
    """The list's filters from the query string (blank fields are no filter)."""

    def text(key: str) -> str | None:
        value = (query.get(key) or "").strip()
        return value or None

    def moment(key: str) -> datetime | None:
        value = text(key)
        if value is None:
            return None
        try:
            found = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{key}: {value!r} is not a date and time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
            ) from None
        return found if found.tzinfo else found.replace(tzinfo=timezone.utc)

    statuses = [s for s in query.getlist("status") if s]
    unknown = [s for s in statuses if s not in Status.__members__]
    if unknown:
        raise ValueError(f"unknown status {unknown[0]!r}")
    before = text("before")
    if before is not None and not before.isdigit():
        raise ValueError("before must be a number")
    return reading.ListFilters(
        statuses=statuses or None,
        name=text("name"),
        queue_name=text("queue"),
        id_prefix=text("id"),
        dedup_id=text("dedup_id"),
        partition_key=text("partition_key"),
        created_after=moment("created_after"),
        created_before=moment("created_before"),
    ), None if before is None else int(before)


def shown(value: Any) -> Markup:
    """A value as escaped text (JSON where it can be, passwords masked); past SHOW_CHARS, its
    start with the whole behind a "show all" expander (plain HTML, no script)."""
    from markupsafe import escape

    if isinstance(value, str):
        text = redact(value)
    else:
        try:
            text = json.dumps(redact_value(value), indent=2, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = redact(repr(value))
    if len(text) <= SHOW_CHARS:
        return Markup("<pre class=value>{}</pre>").format(text)
    return Markup(
        "<details class=value><summary><pre>{}…</pre>show all ({} characters)"
        "</summary><pre>{}</pre></details>"
    ).format(text[:SHOW_CHARS], f"{len(text):,}", escape(text))


def when(value: datetime | None) -> str:
    return (
        "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def error_view(error: Any) -> dict[str, str] | None:
    if error is None:
        return None
    kind = getattr(error, "error_type", None) or type(error).__name__
    message = getattr(error, "message", None) if hasattr(error, "error_type") else str(error)
    return {
        "type": redact(str(kind)),
        "message": redact(str(message or "")),
        "traceback": redact(recorded_traceback(error) or ""),
    }


def timeline(w: Any, steps: list[Any]) -> list[dict[str, Any]]:
    """Each step's bar as offsets (0-100) within the workflow's span, for an inline SVG."""
    begin = w.started_at or w.created_at
    times = [s.completed_at for s in steps if s.completed_at] + [w.updated_at]
    end = max(times) if times else begin
    total = max((end - begin).total_seconds(), 1e-6)
    bars = []
    for s in steps:
        start = s.started_at or s.completed_at
        stop = s.completed_at or end
        if start is None:
            bars.append({"step": s, "x": 0.0, "width": 0.0, "seconds": None})
            continue
        x = min(max((start - begin).total_seconds() / total * 100, 0.0), 100.0)
        width = max(min((stop - start).total_seconds() / total * 100, 100.0 - x), 0.5)
        bars.append({"step": s, "x": x, "width": width, "seconds": (stop - start).total_seconds()})
    return bars
