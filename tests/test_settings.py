"""Settings precedence: a flag given > PGFLOW_* variable > value in code > default.

The pure rules through ``Settings.resolve``; the whole path through real ``pgflow worker
--burst`` processes, reading the effective values from their ``worker_starting`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgflow.errors import ConfigurationError
from pgflow.settings import Settings
from tests.processes import Worker


def banner(
    database_url: str,
    tmp_path: Path,
    *args: str,
    app: str = "tests.settings_app:app",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    worker = Worker(database_url, tmp_path, "--burst", "-P", "1", *args, app=app, env=env)
    try:
        assert worker.wait(60) == 0, worker.stderr()[-3000:]
        found = worker.events("worker_starting")
        assert len(found) == 1, worker.stderr()[-3000:]
        return found[0]
    finally:
        worker.kill()


def test_layers_in_order() -> None:
    code = {"threads": 2, "grace": 7.0, "poll_interval": 2.0}
    env = {"PGFLOW_THREADS": "3", "PGFLOW_GRACE": "8"}
    s = Settings.resolve(code=code, environ=env, flags={"threads": 5, "grace": None})
    assert (s.threads, s.grace, s.poll_interval, s.max_jobs_per_child) == (5, 8.0, 2.0, 0)


def test_interval_is_a_third_of_a_timeout_given_alone() -> None:
    assert Settings.resolve(flags={"heartbeat_timeout": 3.0}, environ={}).heartbeat_interval == 1.0
    assert Settings.resolve(environ={"PGFLOW_HEARTBEAT_TIMEOUT": "9"}).heartbeat_interval == 3.0
    assert Settings.resolve(code={"heartbeat_timeout": 12.0}, environ={}).heartbeat_interval == 4.0
    # A Settings built in code declares only what differs from the defaults.
    declared = Settings(heartbeat_timeout=60.0).given()
    assert declared == {"heartbeat_timeout": 60.0}
    # A timeout given above a derived interval derives it again.
    derived = Settings.resolve(code={"heartbeat_timeout": 60.0}, environ={})
    assert derived.given() == {"heartbeat_timeout": 60.0}
    assert (
        Settings.resolve(
            code=derived.given(), flags={"heartbeat_timeout": 3.0}, environ={}
        ).heartbeat_interval
        == 1.0
    )
    # An interval declared anywhere is kept, and a conflict says how to resolve it.
    with pytest.raises(ConfigurationError, match="only the timeout"):
        Settings.resolve(
            code={"heartbeat_interval": 5.0}, flags={"heartbeat_timeout": 3.0}, environ={}
        )


def test_code_beats_default(database_url: str, tmp_path: Path) -> None:
    b = banner(database_url, tmp_path)
    assert (b["threads"], b["heartbeat_interval"], b["heartbeat_timeout"], b["grace"]) == (
        2,
        1.0,
        6.0,
        7.0,
    )
    assert (b["poll_interval"], b["processes"], b["pool_size"]) == (1.0, 1, 5)  # threads + 3
    assert b["queues"] == "settings" and b["pgflow_version"] and b["app_version"]


def test_environment_beats_code(database_url: str, tmp_path: Path) -> None:
    b = banner(
        database_url,
        tmp_path,
        env={"PGFLOW_THREADS": "3", "PGFLOW_GRACE": "9", "PGFLOW_POLL_INTERVAL": "0.5"},
    )
    assert (b["threads"], b["grace"], b["poll_interval"]) == (3, 9.0, 0.5)
    assert (b["heartbeat_interval"], b["heartbeat_timeout"]) == (1.0, 6.0)


def test_flag_beats_environment(database_url: str, tmp_path: Path) -> None:
    b = banner(
        database_url,
        tmp_path,
        "-c",
        "5",
        "--grace",
        "11",
        env={"PGFLOW_THREADS": "3", "PGFLOW_GRACE": "9"},
    )
    assert (b["threads"], b["grace"], b["heartbeat_interval"]) == (5, 11.0, 1.0)


def test_only_the_timeout_sets_the_interval(database_url: str, tmp_path: Path) -> None:
    b = banner(database_url, tmp_path, "--heartbeat-timeout", "3", app="tests.worker_app")
    assert (b["heartbeat_interval"], b["heartbeat_timeout"]) == (1.0, 3.0)
    b = banner(
        database_url, tmp_path, app="tests.worker_app", env={"PGFLOW_HEARTBEAT_TIMEOUT": "9"}
    )
    assert (b["heartbeat_interval"], b["heartbeat_timeout"]) == (3.0, 9.0)
    b = banner(database_url, tmp_path, app="tests.settings_app:timeout_only")
    assert (b["heartbeat_interval"], b["heartbeat_timeout"]) == (4.0, 12.0)
