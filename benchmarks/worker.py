"""A real ``pgflow worker`` subprocess, as a user would run it, in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from .scratch import Scratch

REPO_ROOT = Path(__file__).resolve().parents[1]
TASK_MODULE = "benchmarks.tasks"


class WorkerRun:
    """``pgflow worker -A benchmarks.tasks -P N -c T -Q queue [--burst]`` against the scratch
    database. ``module`` replaces ``pgflow.cli`` (an instrumented entry point)."""

    def __init__(
        self,
        scratch: Scratch,
        *,
        queue: str,
        threads: int,
        processes: int,
        burst: bool,
        log_path: Path,
        module: str = "pgflow.cli",
        env: dict[str, str] | None = None,
    ) -> None:
        self.scratch = scratch
        self.processes = processes
        self.log_path = log_path
        self.cmd = [
            sys.executable,
            "-m",
            module,
            "worker",
            "-A",
            TASK_MODULE,
            "-P",
            str(processes),
            "-c",
            str(threads),
            "-Q",
            queue,
        ]
        if burst:
            self.cmd.append("--burst")
        inherited = {k: v for k, v in os.environ.items() if k != "PGFLOW_POOL_SIZE"}
        self.env = {
            **inherited,
            "PGFLOW_DATABASE_URL": scratch.url,
            "PGFLOW_LOG_LEVEL": "warning",
            "PGFLOW_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerRun:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait/stop
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every worker process has registered its executor (then a moment for LISTEN)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early ({self.proc.returncode}):\n{self.tail()}")
            n = self.scratch.one("SELECT count(*) FROM pgflow.executors WHERE kind = 'worker'")
            if n >= self.processes:
                time.sleep(0.5)
                return
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready after {timeout:.0f}s:\n{self.tail()}")

    def wait(self, timeout: float) -> int:
        """Wait for a --burst worker to finish; stop it and raise when it takes too long."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(
                f"worker did not finish within {timeout:.0f}s:\n{self.tail()}"
            ) from None
        self.stop()  # reaps any straggler of the group
        if code != 0:
            raise RuntimeError(f"worker exited with {code}:\n{self.tail()}")
        return code

    def children(self) -> list[int]:
        """The worker processes (children of the supervisor), from /proc."""
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def wait_children(self, timeout: float = 30.0) -> list[int]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pids = self.children()
            if len(pids) >= self.processes:
                return pids
            time.sleep(0.01)
        raise RuntimeError(f"worker processes did not start:\n{self.tail()}")

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (a drain), then SIGKILL to the whole group after ``grace`` seconds; nothing
        of the group outlives this call."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        # Our own session (start_new_session): this reaches only what this run started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
