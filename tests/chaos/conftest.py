"""Fixtures of the chaos tier: the chaos app on a fresh database with its ledger and audit
tables, worker processes killed at teardown, and the ``--soak`` load factor.

``pytest tests/chaos`` is the CI tier (minutes on two cores). ``pytest tests/chaos --soak``
(or ``PGFLOW_CHAOS_SOAK=1``) multiplies every load by 10 and lengthens the outages, for runs
by hand. Tests that crash, stop or restart a server start a private cluster of their own
(tests/private_cluster.py); none touches the server the other tests use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgflow
from pgflow.testing import use_database
from tests.chaos import chaos_app
from tests.chaos.harness import APP, AUDIT
from tests.processes import StartWorker, started_workers

SOAK_FACTOR = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="chaos tests: 10x the load and longer outages (hand runs)",
    )


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> int:
    """The load factor: 1 in CI, 10 under --soak."""
    on = (
        request.config.getoption("--soak", default=False)
        or os.environ.get("PGFLOW_CHAOS_SOAK") == "1"
    )
    return SOAK_FACTOR if on else 1


@pytest.fixture
def chaos_url(database_url: str) -> str:
    """The test's database with the ledger and the audit triggers."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(chaos_app.TABLES)
        conn.execute(AUDIT)
    return database_url


@pytest.fixture
def capp(chaos_url: str) -> Iterator[pgflow.App]:
    """The chaos app, pointed at the test's database (for enqueueing and reading)."""
    with use_database(chaos_app.app, chaos_url) as a:
        yield a


@pytest.fixture
def workers(chaos_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """``workers(*args, **kw)`` starts a worker of the chaos app (tests/processes.py); every
    process group is killed at teardown (woken first, should a test have stopped it)."""
    with started_workers(chaos_url, tmp_path, app=APP) as start:
        yield start
