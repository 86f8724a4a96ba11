"""The admin's side of the dashboard: logging in and out with the admin token, and the POST
actions (cancel, resume, fork; pause and resume a queue; the batch actions), each checked for
a session, its CSRF token and the dashboard's own origin."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..bulk import BATCH, Match
from ..errors import ConfigurationError, PgflowError, UnknownWorkflow
from ..redaction import redact
from . import batch, reading
from .security import COOKIE, SESSION_SECONDS
from .views import parse_filters

if TYPE_CHECKING:
    from .app import Dashboard


class Actions:
    """Login, logout, the actions and the batch confirmation page of one dashboard."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard

    def _refused(self, request: Request, detail: str) -> Response:
        return self.d.render(request, "error.html", 403, title="Refused", detail=detail)

    def _same_origin(self, request: Request) -> bool:
        """A browser names the page a POST comes from; it must be this dashboard's host."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host")

    async def batch_confirm(self, request: Request) -> Response:
        """ "Cancel / resume all matching": the count first, with the form that does it."""
        d = self.d
        action = batch.ACTIONS.get(request.path_params["action"])
        if d.session(request) is None:
            return self._refused(request, "batch actions are for a logged-in admin")
        if action is None:
            return d.render(
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
            return d.render(request, "error.html", 400, title="Not a batch filter", detail=str(exc))
        found = await d.read(lambda: batch.count(d.client, m))
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
        return self.d.render(
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

    async def login_form(self, request: Request) -> Response:
        if self.d.sessions is None:
            return self.d.render(
                request,
                "error.html",
                404,
                title="Read-only dashboard",
                detail="no admin token is configured: this dashboard only reads",
            )
        return self.d.render(request, "login.html")

    async def login(self, request: Request) -> Response:
        sessions = self.d.sessions
        if sessions is None or not self._same_origin(request):
            return self._refused(request, "this dashboard is read-only")
        form = await request.form()
        given = form.get("token")
        if not isinstance(given, str) or not sessions.token_matches(given):
            return self.d.render(request, "login.html", 403, failed=True)
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/", status_code=303)
        response.set_cookie(
            COOKIE,
            sessions.new_session(),
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
        d = self.d
        if d.sessions is None:
            return self._refused(
                request, "this dashboard is read-only: no admin token is configured"
            )
        form = await request.form()
        session = d.session(request)
        csrf = form.get("csrf")
        if session is None:
            return self._refused(request, "log in first")
        if not self._same_origin(request) or not d.sessions.csrf_valid(
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
            where, message = await d.read(lambda: self._perform(action, fields))
        except KeyError:
            return d.render(
                request, "error.html", 404, title="Unknown action", detail=f"no action {action!r}"
            )
        except UnknownWorkflow as exc:
            return d.render(request, "error.html", 404, title="Not found", detail=str(exc))
        except PgflowError as exc:
            return d.render(request, "error.html", 409, title="Not done", detail=redact(str(exc)))
        return RedirectResponse(f"{base}{where}?{urlencode({'msg': message})}", 303)

    async def _batch(
        self, request: Request, action: str, form: ImmutableMultiDict[str, str]
    ) -> Response:
        """Cancel or resume the ticked rows, or all matching a filter whose count was seen;
        then back to the list as it was filtered."""
        d = self.d
        # Only a query string for the list page is taken back, re-encoded.
        back = [(k, v) for k, v in parse_qsl(form.get("back") or "") if k != "msg"]
        if action in batch.SELECTED:
            ids = form.getlist("workflow_id")
            outcome = await d.read(lambda: batch.act_on_selected(d.client, action, ids))
        else:
            try:
                filters, _ = parse_filters(form)
                seen = int(form.get("seen") or "")
            except ValueError as exc:
                return d.render(request, "error.html", 400, title="Bad batch form", detail=str(exc))
            m = batch.matching(batch.MATCHING[action], filters)
            now = await d.read(lambda: batch.count(d.client, m))
            if now > seen:  # more than the admin agreed to: show the new count first
                return self._confirm(request, m, filters, now, urlencode(back), seen)
            outcome = await d.read(lambda: batch.act_on_matching(d.client, m))
        base = request.scope.get("root_path", "")
        return RedirectResponse(
            f"{base}/workflows?{urlencode([*back, ('msg', outcome.message)])}", 303
        )

    def _perform(self, action: str, form: ImmutableMultiDict[str, str]) -> tuple[str, str]:
        """Do ``action``; return the page to go back to and what was done."""
        c = self.d.client
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
