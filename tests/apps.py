"""Apps for tests: the type of the ``make_app`` fixture (tests/conftest.py) and its maker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import pgflow


class MakeApp(Protocol):
    """The ``make_app`` fixture: an App on the test's database."""

    def __call__(self, name: str = "test", **kwargs: Any) -> pgflow.App: ...


@contextlib.contextmanager
def app_maker(database_url: str) -> Iterator[MakeApp]:
    """Make Apps on ``database_url`` for the block; shut them all down after, newest first."""
    apps: list[pgflow.App] = []

    def make(name: str = "test", **kwargs: Any) -> pgflow.App:
        app = pgflow.App(name, database_url=database_url, **kwargs)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in reversed(apps):
            app.shutdown(timeout=5)
