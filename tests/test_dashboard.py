"""The dashboard in a real browser: headless Chromium (the Debian package, /usr/bin/chromium)
driven by Playwright, against the app served by uvicorn on a thread, over a database holding
real workflows in every state (run by an in-process worker, crashed by the release statement).
The tests also take the README's screenshots: into docs/screenshots/ when PGFLOW_SCREENSHOTS=1
(to refresh the README's), else into the test's temporary folder (still taken, so a page that
cannot render fails here)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

import pgflow  # noqa: E402
from pgflow.dashboard import create_app  # noqa: E402
from pgflow.recovery import release_executors  # noqa: E402
from tests.inprocess import running_worker, wait_for  # noqa: E402
from tests.serving import serving  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
README_SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
SCREENSHOTS = (
    README_SCREENSHOTS
    if os.environ.get("PGFLOW_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="pgflow-screenshots-"))
)
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>" + "x" * 10_000
TOKEN = "s3cret-admin-token"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs the Debian chromium package"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield found
        found.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page that fails the test if any dialog (an alert a hostile value ran) opens."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    dialogs: list[str] = []

    def refuse(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", refuse)
    yield tab
    context.close()
    assert dialogs == [], f"a value ran as script: {dialogs}"


@pytest.fixture
def world(database_url: str) -> Iterator[dict[str, str]]:
    """One workflow in every state, made by running them: ids by status (PENDING runs in an
    in-process worker until the test ends)."""
    app = pgflow.App("dash", database_url=database_url, app_version="d-1")
    jobs = app.queue("jobs", concurrency=4)
    idle = app.queue("idle", partitioned=True)  # no worker serves it
    crashy = app.queue("crashy")
    gate = threading.Event()

    @app.step(name="shout")
    def shout(name: str) -> str:
        return name.upper()

    @app.workflow(name="greet")
    def greet(name: str) -> str:
        pgflow.set_event("progress", {"done": True})
        return shout(name) + "!"

    @app.workflow(name="boom")
    def boom(text: str) -> None:
        raise ValueError(text)

    @app.step(name="wait_for_gate")
    def wait_for_gate() -> bool:
        return gate.wait(60)

    @app.workflow(name="held")
    def held() -> bool:
        return wait_for_gate()

    @app.workflow(name="crashes", max_recovery_attempts=0)
    def crashes() -> None:  # never runs: the test plays the crashing worker
        raise AssertionError("must not run")

    ids: dict[str, str] = {}
    with running_worker(app, "jobs"):
        ok = jobs.options(dedup_id="greet-ada").enqueue(greet, "ada")
        bad = jobs.enqueue(boom, HOSTILE)
        run = jobs.enqueue(held)
        assert ok.result(timeout=20) == "ADA!"
        with pytest.raises(ValueError):
            bad.result(timeout=20)
        wait_for(lambda: run.status().status is pgflow.Status.PENDING, what="held to run")
        ids.update(SUCCESS=ok.workflow_id, ERROR=bad.workflow_id, PENDING=run.workflow_id)
        ids["ENQUEUED"] = idle.options(partition_key="eu").enqueue(greet, "bob").workflow_id
        cancelled = idle.options(partition_key="us").enqueue(greet, "eve").workflow_id
        app.cancel(cancelled)
        ids["CANCELLED"] = cancelled
        lost = crashy.enqueue(crashes).workflow_id
        app.executor.ensure_registered()
        app.db.fetchall(
            "claim_workflows",
            {
                "queue_name": "crashy",
                "app_version": app.app_version,
                "names": sorted(app.registry.workflows),
                "executor_id": app.executor.executor_id,
                "limit": 10,
                "strict": False,
            },
        )
        release_executors(app, [app.executor.executor_id], charge=True, workflow_ids=[lost])
        ids["MAX_RECOVERY_ATTEMPTS_EXCEEDED"] = lost
        for status, workflow_id in ids.items():
            assert app.retrieve(workflow_id).status().status.value == status
        try:
            yield ids
        finally:
            gate.set()
    app.shutdown(timeout=5)


def status_of(database_url: str, workflow_id: str) -> str:
    with pgflow.Client(database_url) as client:
        found = client.retrieve_status(workflow_id)
        assert found is not None
        return found.status.value


def test_every_page_loads_read_only_and_hostile_values_stay_text(
    page: Any, world: dict[str, str], database_url: str
) -> None:
    with serving(create_app(database_url)) as base:
        page.goto(base + "/")
        for status in world:
            assert page.inner_text(f"[data-status={status}] .n").strip() == "1", status
        assert "jobs" in page.inner_text("main") and "idle" in page.inner_text("main")
        assert page.locator("svg.chart").count() == 1
        assert "read-only" in page.inner_text("header")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "overview.png"))

        page.goto(base + "/workflows")
        listed = page.locator("[data-workflow-id]")
        assert sorted(listed.evaluate_all("els => els.map(e => e.dataset.workflowId)")) == sorted(
            world.values()
        )
        # read-only: no batch action, no row to tick
        assert (
            page.locator(
                "button[data-action], [data-batch], input[type=checkbox][name=workflow_id]"
            ).count()
            == 0
        )

        for status, workflow_id in world.items():
            page.goto(f"{base}/workflows/{workflow_id}")
            assert status in page.inner_text("h1"), status
            assert page.locator("button[data-action]").count() == 0  # read-only: no actions
        page.goto(f"{base}/workflows/{world['ENQUEUED']}")
        assert "Why is this not running?" in page.inner_text("main")
        assert "no live worker" in page.inner_text(".explain").lower()

        page.goto(f"{base}/workflows/{world['SUCCESS']}")
        assert "ADA!" in page.inner_text("main") and "shout" in page.inner_text("table.steps")
        assert "progress" in page.inner_text("main")  # its event
        page.screenshot(path=str(SCREENSHOTS / "workflow.png"))

        # The hostile input and error: shown as text, cut with a "show all", never run.
        page.goto(f"{base}/workflows/{world['ERROR']}")
        text = page.inner_text("main")
        assert "<script>alert(1)</script>" in text and "onerror=alert(2)>" in text
        assert page.locator("main script, main img").count() == 0
        assert "show all" in text and "ValueError" in text
        page.locator("details.value summary").first.click()
        assert "x" * 10_000 in page.inner_text("main")

        page.goto(base + "/queues")
        assert page.locator("[data-queue=idle]").count() == 1
        assert page.locator("button[data-action]").count() == 0
        page.screenshot(path=str(SCREENSHOTS / "queues.png"))
        page.goto(base + "/workers")
        assert "running now" in page.inner_text("main")
        assert page.inner_text("main").count("held") == 1
        assert "Died recently (0)" in page.inner_text("main")

        # A forged POST (no session, any token) is refused, and changes nothing.
        forged = page.request.post(
            base + "/actions/cancel", form={"workflow_id": world["PENDING"], "csrf": "forged"}
        )
        assert forged.status == 403
        assert page.request.post(base + "/login", form={"token": ""}).status == 403
        for action, form in (
            ("cancel-selected", {"workflow_id": world["PENDING"]}),
            ("cancel-matching", {"status": "PENDING", "seen": "1"}),
        ):
            assert (
                page.request.post(
                    f"{base}/actions/{action}", form={**form, "csrf": "forged"}
                ).status
                == 403
            )
        assert page.request.get(base + "/batch/cancel?status=PENDING").status == 403
        assert status_of(database_url, world["PENDING"]) == "PENDING"
        assert page.request.get(base + "/workflows/no-such-id").status == 404
    for shot in ("overview", "workflow", "queues"):
        assert (SCREENSHOTS / f"{shot}.png").stat().st_size < 200_000


def test_filters(page: Any, world: dict[str, str], database_url: str) -> None:
    def listed() -> list[str]:
        return sorted(
            page.locator("[data-workflow-id]").evaluate_all(
                "els => els.map(e => e.dataset.workflowId)"
            )
        )

    with serving(create_app(database_url)) as base:
        page.goto(base + "/workflows")
        page.check("input[name=status][value=ERROR]")
        page.check("input[name=status][value=CANCELLED]")
        page.click("form#filters button[type=submit]")
        page.wait_for_url("**status=ERROR**")
        assert listed() == sorted([world["ERROR"], world["CANCELLED"]])

        cases = {
            "name=greet": [world["SUCCESS"], world["ENQUEUED"], world["CANCELLED"]],
            "queue=idle": [world["ENQUEUED"], world["CANCELLED"]],
            "queue=idle&status=ENQUEUED": [world["ENQUEUED"]],
            f"id={world['PENDING'][:8]}": [world["PENDING"]],
            "dedup_id=greet-ada": [world["SUCCESS"]],
            "partition_key=us": [world["CANCELLED"]],
            "created_after=2000-01-01T00:00": list(world.values()),
            "created_before=2000-01-01T00:00": [],
        }
        for query, expected in cases.items():
            page.goto(f"{base}/workflows?{query}")
            assert listed() == sorted(expected), query
        assert page.request.get(base + "/workflows?status=NOPE").status == 400


def test_a_whole_id_finds_its_workflow_whatever_its_age(
    page: Any, world: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgflow.dashboard import reading

    # The prefix walk reaches back 2 rows: the oldest workflows lie beyond it.
    monkeypatch.setattr(reading, "SCAN_BUDGET", 2)
    oldest = world["SUCCESS"]  # the first enqueued
    with serving(create_app(database_url)) as base:
        page.goto(f"{base}/workflows?id={oldest[:8]}")
        assert page.locator("[data-workflow-id]").count() == 0  # a prefix: the bounded walk
        page.goto(f"{base}/workflows?id={oldest}")
        assert page.locator("[data-workflow-id]").evaluate_all(
            "els => els.map(e => e.dataset.workflowId)"
        ) == [oldest]
        assert page.locator("tr.exact").count() == 1
        page.goto(f"{base}/workflows?id={oldest}&status=ERROR")  # other filters still hold
        assert page.locator("[data-workflow-id]").count() == 0
    with pgflow.Client(database_url) as client:
        last = world["MAX_RECOVERY_ATTEMPTS_EXCEEDED"]  # the newest: within the walk
        newest = reading.list_page(client, reading.ListFilters(id_prefix=last), None)
        # found by the walk too, and shown once
        assert newest.exact is not None and newest.exact["workflow_id"] == last
        assert [r["workflow_id"] for r in newest.rows] == []


def test_workers_page_lists_executors_that_died(page: Any, database_url: str) -> None:
    from pgflow.recovery import reap_dead_executors

    app = pgflow.App("dash", database_url=database_url, app_version="d-0")
    try:
        app.executor.ensure_registered()  # a process that is about to die
        gone = app.executor.executor_id
        app.executor.stop(deregister=False)  # its heartbeat stops, its row stays
        assert reap_dead_executors(app, "reaper-9", [gone]) == [gone]
    finally:
        app.shutdown(timeout=5)
    with serving(create_app(database_url)) as base:
        page.goto(base + "/workers")
        assert "Died recently (1)" in page.inner_text("main")
        row = page.inner_text(f"[data-dead='{gone}']")
        assert "reaper-9" in row and "d-0" in row


def test_live_refresh_pauses_while_the_tab_is_hidden(
    page: Any, world: dict[str, str], database_url: str
) -> None:
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.headers.get("hx-request") else None)
    # The page's visibility as the test says (headless tabs are always visible).
    page.add_init_script(
        "Object.defineProperty(document, 'hidden', "
        "{configurable: true, get: () => !!window.__hidden});"
    )
    with serving(create_app(database_url, refresh_seconds=0.2)) as base:
        page.goto(base + "/")
        for _ in range(50):  # (playwright delivers events only inside its own calls)
            if len(polls) >= 2:
                break
            page.wait_for_timeout(100)
        assert len(polls) >= 2, "the overview did not refresh"
        page.evaluate("window.__hidden = true")
        page.wait_for_timeout(300)  # a poll already under way may land
        hidden_from = len(polls)
        page.wait_for_timeout(1000)
        assert len(polls) == hidden_from  # no poll while hidden
        page.evaluate(
            "window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))"
        )
        page.wait_for_timeout(150)
        assert len(polls) > hidden_from  # at once when shown again
        assert "enqueued" in page.inner_text("#live")


def test_paging_walks_the_seq_keyset(world: dict[str, str], database_url: str) -> None:
    from pgflow.dashboard import reading

    with pgflow.Client(database_url) as client:
        seen: list[str] = []
        before = None
        while True:
            found = reading.list_page(client, reading.ListFilters(), before, limit=2)
            seen += [r["workflow_id"] for r in found.rows]
            if found.next_before is None:
                break
            before = found.next_before
        assert sorted(seen) == sorted(world.values()) and len(seen) == len(set(seen))
        counts = reading.status_counts(client)
        assert counts.counts == dict.fromkeys(world, 1) and not counts.estimated


def test_admin_cancels_a_running_workflow_with_csrf(
    page: Any, world: dict[str, str], database_url: str
) -> None:
    with serving(create_app(database_url, admin_token=TOKEN)) as base:
        page.goto(f"{base}/workflows/{world['PENDING']}")
        assert page.locator("button[data-action]").count() == 0  # not logged in yet
        page.click("text=admin log in")
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        assert "not the admin token" in page.inner_text("main")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        cookie = next(c for c in page.context.cookies() if c["name"].startswith("pgflow"))
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # Logged in, but a POST without the page's CSRF token is still refused.
        assert (
            page.request.post(
                base + "/actions/cancel", form={"workflow_id": world["PENDING"]}
            ).status
            == 403
        )
        assert (
            page.request.post(
                base + "/actions/cancel", form={"workflow_id": world["PENDING"], "csrf": "0" * 64}
            ).status
            == 403
        )
        assert status_of(database_url, world["PENDING"]) == "PENDING"

        page.goto(f"{base}/workflows/{world['PENDING']}")
        page.click("button[data-action=cancel]")
        page.wait_for_url("**msg=**")
        assert "CANCELLED" in page.inner_text("main")
        assert status_of(database_url, world["PENDING"]) == "CANCELLED"

        page.goto(base + "/queues")
        page.locator("[data-queue=idle] button[data-action=pause-queue]").click()
        page.wait_for_url("**msg=**")
        assert "paused" in page.inner_text("[data-queue=idle]")
        with pgflow.Client(database_url) as client:
            assert {q.name: q.paused for q in client.queue_report()[0]}["idle"] is True


def log_in(page: Any, base: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_admin_cancels_selected_and_all_matching(
    page: Any, world: dict[str, str], database_url: str
) -> None:
    with pgflow.Client(database_url) as client:
        # Two more running (held at the gate, as world's PENDING one) ...
        running = [client.enqueue("jobs", "held").workflow_id for _ in range(2)]
        # ... and two more waiting on the unserved queue "idle", one waiting elsewhere.
        waiting = [
            client.enqueue("idle", "greet", n, partition_key="eu").workflow_id for n in ("x", "y")
        ]
        elsewhere = client.enqueue("crashy", "greet", "z").workflow_id
    wait_for(
        lambda: all(status_of(database_url, i) == "PENDING" for i in running), what="the two to run"
    )
    with serving(create_app(database_url, admin_token=TOKEN)) as base:
        log_in(page, base)
        page.goto(base + "/workflows?status=PENDING")
        for workflow_id in running:
            page.check(f"input[name=workflow_id][value='{workflow_id}']")
        page.click("button[data-action=cancel-selected]")
        page.wait_for_url("**msg=**")
        assert "cancelled 2 of 2" in page.inner_text(".flash")
        assert "status=PENDING" in page.url  # back to the list as it was filtered
        assert [status_of(database_url, i) for i in running] == ["CANCELLED"] * 2
        assert status_of(database_url, world["PENDING"]) == "PENDING"  # not ticked

        # All matching a status + queue filter: the count first, then exactly those.
        page.goto(base + "/workflows?status=ENQUEUED&queue=idle")
        page.click("[data-batch=cancel]")
        assert page.get_attribute("[data-count]", "data-count") == "3"
        assert "ENQUEUED workflows on queue idle" in page.inner_text("main")
        page.click("button[data-action=cancel-matching]")
        page.wait_for_url("**msg=**")
        assert "cancelled 3 of 3" in page.inner_text(".flash")
        for workflow_id in [world["ENQUEUED"], *waiting]:
            assert status_of(database_url, workflow_id) == "CANCELLED"
        assert status_of(database_url, elsewhere) == "ENQUEUED"
        assert status_of(database_url, world["PENDING"]) == "PENDING"

        # More matching now than the count confirmed: nothing done, the new count shown.
        with pgflow.Client(database_url) as client:
            late = client.enqueue("idle", "greet", "late", partition_key="eu").workflow_id
        page.goto(base + "/workflows?status=CANCELLED&queue=idle")
        page.click("[data-batch=resume]")
        assert page.get_attribute("[data-count]", "data-count") == "4"
        csrf = page.get_attribute("form.batch-confirm input[name=csrf]", "value")
        stale = page.request.post(
            base + "/actions/resume-matching",
            form={"csrf": csrf, "status": "ENQUEUED", "queue": "idle", "seen": "0"},
        )
        assert stale.status == 200 and "nothing was done" in stale.text()
        assert status_of(database_url, late) == "ENQUEUED"  # resume only drops a delay
        # A filter "all matching" cannot take is explained, and not offered.
        page.goto(base + "/workflows?dedup_id=greet-ada")
        assert page.locator("[data-batch]").count() == 0
        assert "clear dedup id" in page.inner_text("form#batch")


def test_sessions_and_chart_are_pure() -> None:
    from pgflow.dashboard.chart import nice_ceiling, throughput_svg
    from pgflow.dashboard.security import SESSION_SECONDS, Sessions

    sessions = Sessions("t")
    cookie = sessions.new_session(now=1000)
    assert sessions.valid(cookie, now=1000 + SESSION_SECONDS - 1)
    assert not sessions.valid(cookie, now=1000 + SESSION_SECONDS)
    assert not sessions.valid(cookie.replace(".1000.", ".1001."), now=1000)
    assert not Sessions("other").valid(cookie, now=1000)
    assert not sessions.csrf_valid(cookie, None)
    assert [nice_ceiling(n) for n in (0, 1, 3, 7, 11, 480)] == [1, 1, 5, 10, 20, 500]
    svg = throughput_svg([3] + [0] * 59, [0] * 59 + [1])
    assert svg.startswith("<svg") and svg.count("<rect") == 2


def test_cli_dashboard_help_names_the_token_variable() -> None:
    from click.testing import CliRunner

    from pgflow.cli import main

    result = CliRunner().invoke(main, ["dashboard", "--help"])
    assert result.exit_code == 0
    assert "PGFLOW_DASHBOARD_TOKEN" in result.output and "127.0.0.1" in result.output


def test_children_as_a_tree_with_links(
    page: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgflow.dashboard import reading

    app = pgflow.App("dash", database_url=database_url, app_version="d-2")

    @app.workflow(name="leaf")
    def leaf(n: int) -> int:
        return n

    @app.workflow(name="branch")
    def branch(n: int) -> int:
        return leaf(n) + leaf(n + 1)

    @app.workflow(name="root")
    def root(k: int) -> int:
        return sum(branch(i) for i in range(k))

    try:
        assert app.options(workflow_id="tree").call(root, 3) == 9
    finally:
        app.shutdown(timeout=5)
    with serving(create_app(database_url)) as base:
        page.goto(f"{base}/workflows/tree")
        section = page.locator("section.children")
        assert "Children (9)" in section.inner_text()
        branches = section.locator("ul.tree > li[data-depth='1']")
        assert branches.count() == 3 and section.locator("li[data-depth='2']").count() == 6
        # each branch holds its own two leaves, nested under it
        first = branches.first
        assert first.get_attribute("data-child") == "tree-1"
        assert first.locator("li[data-depth='2']").evaluate_all(
            "els => els.map(e => e.dataset.child)"
        ) == ["tree-1-1", "tree-1-2"]
        assert "SUCCESS" in first.inner_text() and "branch" in first.inner_text()
        assert section.locator("[data-more]").count() == 0
        first.locator("li[data-child='tree-1-2'] > a").click()
        page.wait_for_url("**/workflows/tree-1-2")
        assert "leaf" in page.inner_text("h1") and "SUCCESS" in page.inner_text("h1")

        # Past the bounds: the first levels shown, "n more" for the rest.
        monkeypatch.setattr(reading, "TREE_NODES", 5)
        page.goto(f"{base}/workflows/tree")
        assert page.locator("section.children li").count() == 5
        assert page.get_attribute("[data-more]", "data-more") == "4"
        assert "and 4 more not shown" in page.inner_text("section.children")
    with pgflow.Client(database_url) as client:
        shallow = reading.child_tree(client, "tree", depth=1)
        assert [c["workflow_id"] for c in shallow.roots] == ["tree-1", "tree-2", "tree-3"]
        assert shallow.shown == 3 and shallow.more == 6 and not shallow.more_capped
        assert reading.child_tree(client, "tree-1-1").shown == 0
