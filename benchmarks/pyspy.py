"""py-spy for the profiles: one sampler per worker process, and summaries of its raw stacks."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Which thread a stack belongs to, by a (function, file) pair found anywhere in it.
_THREADS = (
    ("claim loop", "_loop", "worker/process.py"),
    ("workflow threads", "_run_one", "worker/process.py"),
    ("workflow threads", "_serve", "worker/threads.py"),
    ("completer", "_run", "worker/threads.py"),
    ("listener", "_run", "worker/listener.py"),
    ("heartbeat", "_beat", "executor.py"),
    ("recovery", "recover", "worker/upkeep.py"),
    ("pool workers", "run", "psycopg_pool/pool.py"),
    ("supervisor loop", "_loop", "worker/supervisor.py"),
)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def frames_of(stack: str) -> tuple[int | None, list[tuple[str, str]]]:
    """The pid and ``(function, file)`` frames, outermost first, of one py-spy raw line."""
    parts = stack.split(";")
    pid = None
    if parts and parts[0].startswith("process "):
        pid = int(parts[0][len("process ") :].split(":", 1)[0])
        parts = parts[1:]
    if parts and parts[0].startswith("thread ("):
        parts = parts[1:]
    frames = []
    for part in parts:
        m = _FRAME.match(part)
        frames.append((m["func"], _short(m["file"])) if m else (part, ""))
    return pid, frames


def read_stacks(paths: list[Path]) -> Iterator[tuple[int | None, list[tuple[str, str]], int]]:
    for path in paths:
        file_pid = int(path.name.split("-")[-1].split(".")[0])
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                pid, frames = frames_of(stack)
                yield pid or file_pid, frames, int(n)


def thread_of(frames: list[tuple[str, str]]) -> str:
    for label, func, file in _THREADS:
        if any((f == func or f.endswith("." + func)) and file in p for f, p in frames):
            return label
    return "other"


def area_of(func: str, file: str) -> str:
    """A coarse owner of a leaf frame: whose code burns the CPU."""
    if "psycopg_pool" in file:
        return "psycopg_pool"
    if "psycopg" in file:
        return "psycopg"
    if "structlog" in file:
        return "structlog"
    if file.startswith("pgflow/"):
        return file
    if "threading.py" in file or "queue.py" in file or "concurrent/" in file:
        return "stdlib threading/queue"
    return "other: " + (file or func)


def summarize_stacks(paths: list[Path]) -> dict[str, Any]:
    """Shares of samples by thread, by area, by leaf function and by pgflow function."""
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    pids: collections.Counter[int] = collections.Counter()
    for pid, frames, n in read_stacks(paths):
        if not frames:
            continue
        total += n
        pids[pid or 0] += n
        threads[thread_of(frames)] += n
        func, file = frames[-1]
        areas[area_of(func, file)] += n
        leaves[f"{func} ({file})"] += n
        for name in {f"{f} ({p})" for f, p in frames if p.startswith("pgflow/")}:
            inclusive[name] += n

    def shares(counter: collections.Counter[Any], top: int = 15) -> list[tuple[str, float]]:
        return [(str(k), round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "by_process": shares(pids),
        "by_thread": shares(threads),
        "by_area": shares(areas),
        "top_self": shares(leaves, 20),
        "top_inclusive_pgflow": shares(inclusive, 25),
    }


class Sampler:
    """One py-spy per worker process, attached by pid, sampling only the thread that holds the
    GIL (``--gil``): where the process's Python CPU goes, waits left out."""

    def __init__(self, pids: list[int], folder: Path, name: str, rate: int) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise SystemExit("py-spy is missing: pip install py-spy")
        self.files = [folder / f"{name}-{pid}.pyspy.txt" for pid in pids]
        self.procs = [
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--nonblocking",
                    "--threads",
                    "--gil",
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "-o",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, path in zip(pids, self.files, strict=True)
        ]

    def finish(self, timeout: float = 30.0) -> list[Path]:
        """Wait for the samplers (they end with their process; SIGINT makes them write now)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [f for f in self.files if f.exists()]
