"""The dashboard's ASGI application: Starlette routes rendering Jinja2 templates (autoescaped),
htmx for the overview's live refresh, POST actions for a logged-in admin, and the probes
(``/metrics``, ``/healthz``). The pages are in :mod:`.pages`, the admin's side in
:mod:`.actions`, the probes in :mod:`.probes`, what the templates show in :mod:`.views`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import tables
from ..client import Client
from ..errors import ConfigurationError
from ..redaction import redact
from ..settings import Settings
from .actions import Actions
from .pages import Pages
from .probes import Probes
from .security import COOKIE, Sessions
from .views import shown, when

T = TypeVar("T")
HERE = os.path.dirname(__file__)
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
        dashboard.close()

    return Starlette(routes=dashboard.routes(), lifespan=lifespan)


class Dashboard:
    """The pages, actions and probes over one Client: what they share (rendering, the admin
    session, reads off the event loop) is here; each group lives in its own module."""

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
        self.probes = Probes(self)

    def close(self) -> None:
        self.probes.close()
        self.client.close()

    def routes(self) -> list[BaseRoute]:
        pages, actions, probes = Pages(self), Actions(self), self.probes
        gets: Sequence[tuple[str, Callable[[Request], Any]]] = (
            ("/", pages.overview),
            ("/workflows", pages.workflows),
            ("/workflows/{workflow_id:path}", pages.workflow),
            ("/queues", pages.queues),
            ("/workers", pages.workers),
            ("/login", actions.login_form),
            ("/batch/{action}", actions.batch_confirm),
            # read-only and open to all, like the pages; never an action
            ("/metrics", probes.scrape),
            ("/healthz", probes.health),
            ("/healthz/live", probes.health),
            ("/healthz/ready", probes.health),
        )
        return [
            *(Route(path, page, methods=["GET"]) for path, page in gets),
            Route("/login", actions.login, methods=["POST"]),
            Route("/logout", actions.logout, methods=["POST"]),
            Route("/actions/{action}", actions.act, methods=["POST"]),
            Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
        ]

    def session(self, request: Request) -> str | None:
        """The admin session of ``request`` (its cookie), if it is a valid one."""
        cookie = request.cookies.get(COOKIE)
        return cookie if self.sessions is not None and self.sessions.valid(cookie) else None

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        session = self.session(request)
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

    async def read(self, fn: Callable[[], T]) -> T:
        """``fn`` (blocking database reads) on a worker thread, off the event loop."""
        return await run_in_threadpool(fn)
