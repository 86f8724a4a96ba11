"""Real processes for the unit and chaos tests: ``pgflow worker`` supervisors in process groups
of their own, one-shot ``pgflow`` and ``python`` runs, and what /proc says about a pid.

A test starts workers through a ``workers`` fixture built on :func:`started_workers`, so every
process group it started is killed at teardown, whatever the test did to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_APP = "tests.worker_app"


def clean_env(
    database_url: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without any ``PGFLOW_*`` variable, then
    ``PGFLOW_DATABASE_URL`` (when given) and ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PGFLOW_")}
    if database_url is not None:
        environ["PGFLOW_DATABASE_URL"] = database_url
    environ.update(env or {})
    return environ


def run_pgflow(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m pgflow.cli ARGS`` run to its end, its output captured as text. ``env`` is
    the whole environment (default: this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "pgflow.cli", *args],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS`` run to its end, its output captured as text. ``env`` is the
    whole environment (default: this process's)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_python(
    code: str, *args: str, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """``python -c CODE ARGS`` started in the background, stdout and stderr to ``log``; ``env``
    is the whole environment (give ``PYTHONPATH`` if the code imports ``tests``)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Worker:
    """One ``pgflow worker -A app ARGS`` supervisor (and its children) in a process group of
    its own, on ``database_url`` with JSON logs; stdout and stderr go to files in ``logdir``.

    ``hostname`` runs it in a UTS namespace of its own with that host name: another machine,
    as far as pgflow can tell (no pid checks across it, only heartbeats). ``prefix`` goes
    before the command (e.g. ``faketime``).
    """

    def __init__(
        self,
        database_url: str,
        logdir: Path,
        *args: str,
        app: str = WORKER_APP,
        env: dict[str, str] | None = None,
        hostname: str | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        environ = clean_env(database_url, {"PGFLOW_LOG_FORMAT": "json", **(env or {})})
        n = len(list(logdir.glob("worker-*.err")))
        self.name = f"worker-{n}"
        self.out_path = logdir / f"worker-{n}.out"
        self.err_path = logdir / f"worker-{n}.err"
        self.argv = [sys.executable, "-m", "pgflow.cli", "worker", "-A", app, *args]
        argv = [*(prefix or []), *self.argv]
        if hostname is not None:
            # exec keeps the supervisor's pid the one Popen knows.
            argv = [
                "unshare",
                "--uts",
                "sh",
                "-c",
                f'hostname {hostname} && exec "$@"',
                "sh",
                *argv,
            ]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=environ,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def wait(self, timeout: float) -> int:
        """The exit code; the test fails (and the group is killed) past ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"{self.name} {self.argv[5:]} still running after {timeout}s\n"
                + self.stderr()[-4000:]
            )

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (the supervisor and any child left behind), and wake it,
        should a test have stopped it."""
        self.signal_group(signal.SIGKILL)
        self.signal_group(signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events on stderr (named ``name``, when given)."""
        return events_of(self.stderr(), name)

    def children(self) -> list[int]:
        """Live worker processes of this supervisor."""
        return [p for p in children_of(self.pid) if not process_gone(p)]


class StartWorker(Protocol):
    """A ``workers`` fixture: ``workers(*args, app=..., env=..., url=...)`` starts a Worker."""

    def __call__(self, *args: str, **kwargs: Any) -> Worker: ...


@contextlib.contextmanager
def started_workers(
    database_url: str | None, logdir: Path, app: str = WORKER_APP
) -> Iterator[StartWorker]:
    """Start workers on ``database_url`` (or each on its ``url=``) for the block; every process
    group is killed when it ends."""
    started: list[Worker] = []

    def start(*args: str, **kwargs: Any) -> Worker:
        url = kwargs.pop("url", database_url)
        assert url is not None, "no database: give url="
        kwargs.setdefault("app", app)
        w = Worker(url, logdir, *args, **kwargs)
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            w.kill()


def events_of(text: str, name: str | None = None) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines (with ``"event": name``, when given)."""
    found = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and (name is None or event.get("event") == name):
            found.append(event)
    return found


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.05
) -> Any:
    """``predicate()``'s first true value; the test fails past ``timeout`` seconds (typed
    ``Any``: predicates return ``cond and value``)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_gone(pid: int) -> bool:
    """Exited: no such pid, or a zombie nobody has reaped yet."""
    try:
        state = _stat(pid)[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
