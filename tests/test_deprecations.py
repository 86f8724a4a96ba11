"""Old spellings of the public API: each still works for one release, warns with a
DeprecationWarning that names its replacement, and clashes with its replacement loudly."""

from __future__ import annotations

import pytest

import pgflow


def test_queue_priority_enabled_is_the_flag() -> None:
    app = pgflow.App("deprecations")
    assert app.queue("ranked", priority_enabled=True).priority_enabled is True
    assert app.queue("plain").priority_enabled is False


def test_queue_priority_keyword_is_a_deprecated_alias_of_priority_enabled() -> None:
    app = pgflow.App("deprecations")
    with pytest.warns(DeprecationWarning, match="priority_enabled=") as caught:
        q = app.queue("ranked", priority=True)
    assert q.priority_enabled is True
    assert q == app.queue("ranked", priority_enabled=True)
    # The warning points at the caller's line, not into pgflow.
    assert caught[0].filename == __file__


def test_queue_priority_and_priority_enabled_together_are_refused() -> None:
    app = pgflow.App("deprecations")
    with pytest.raises(pgflow.ConfigurationError, match="priority_enabled= only"):
        app.queue("ranked", priority=True, priority_enabled=True)


def test_an_enqueue_priority_on_a_queue_without_the_flag_names_the_flag() -> None:
    app = pgflow.App("deprecations")
    with pytest.raises(pgflow.ConfigurationError, match="priority_enabled=True"):
        app.queue("plain").options(priority=1)


def test_handle_get_status_and_get_result_are_deprecated_aliases(database_url: str) -> None:
    app = pgflow.App("deprecations", database_url=database_url)
    try:

        @app.workflow()
        def answer() -> int:
            return 42

        handle = app.start(answer)
        with pytest.warns(DeprecationWarning, match=r"use result\(\)") as caught:
            assert handle.get_result(timeout=10) == 42
        assert caught[0].filename == __file__
        with pytest.warns(DeprecationWarning, match=r"use status\(\)") as caught:
            assert handle.get_status().status is pgflow.Status.SUCCESS
        assert caught[0].filename == __file__
    finally:
        app.shutdown(timeout=5)
