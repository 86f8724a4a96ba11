"""One frozen Settings: every field's default, ``PGFLOW_*`` variable, CLI flag and help, together.

Read once at start; never mutated afterwards. Precedence, for every field: a CLI flag actually
given > its ``PGFLOW_*`` variable > a value in code (``App(...)``, a ``Settings``) > the default
(:meth:`Settings.resolve`). The heartbeat interval, when set nowhere, is a third of the timeout.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .durations import parse_duration
from .errors import ConfigurationError
from .limits import check_count, check_payload_limit, check_text


def _setting(default: Any, env: str, flag: str | None, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "flag": flag, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """pgflow's configuration. Each field documents its variable and flag."""

    database_url: str | None = _setting(
        None,
        "PGFLOW_DATABASE_URL",
        "--database-url",
        "PostgreSQL URL. Unset: an embedded server under PGFLOW_HOME is started.",
    )
    schema: str = _setting("pgflow", "PGFLOW_SCHEMA", "--schema", "Schema holding pgflow's tables.")
    home: str = _setting(
        ".pgflow",
        "PGFLOW_HOME",
        None,
        "Folder of the embedded server's data (when no URL is given).",
    )
    serializer: str = _setting(
        "json",
        "PGFLOW_SERIALIZER",
        None,
        "'json' (default) or 'pickle' (opt-in; trusts every writer).",
    )
    app_version: str | None = _setting(
        None,
        "PGFLOW_APP_VERSION",
        None,
        "Application version; default: a hash of the registered workflow and step code.",
    )
    log_format: str = _setting(
        "auto",
        "PGFLOW_LOG_FORMAT",
        "--log-format",
        "'console', 'json' or 'auto' (console on a terminal).",
    )
    log_level: str = _setting(
        "info", "PGFLOW_LOG_LEVEL", "--log-level", "debug, info, warning or error."
    )
    heartbeat_interval: float = _setting(
        5.0,
        "PGFLOW_HEARTBEAT_INTERVAL",
        "--heartbeat-interval",
        "Seconds between an executor's heartbeats (default: 5, or a third of the heartbeat "
        "timeout when only that is set).",
    )
    heartbeat_timeout: float = _setting(
        30.0,
        "PGFLOW_HEARTBEAT_TIMEOUT",
        "--heartbeat-timeout",
        "Seconds without a heartbeat after which an executor is dead and its work adopted.",
    )
    poll_interval: float = _setting(
        1.0,
        "PGFLOW_POLL_INTERVAL",
        "--poll-interval",
        "Seconds between claim polls when no NOTIFY arrives.",
    )
    pool_size: int = _setting(
        0,
        "PGFLOW_POOL_SIZE",
        "--pool-size",
        "Most pooled connections per process (0: threads + 3, one per workflow thread plus "
        "the claim loop, the heartbeat and the completer).",
    )
    pool_idle_timeout: float = _setting(
        60.0,
        "PGFLOW_POOL_IDLE_TIMEOUT",
        "--pool-idle-timeout",
        "Seconds a pooled connection may stay unused before it goes back to the server.",
    )
    auto_migrate: bool = _setting(
        True, "PGFLOW_AUTO_MIGRATE", None, "Migrate the schema on first use when the role may."
    )
    max_payload_bytes: int = _setting(
        16 * 1024 * 1024,
        "PGFLOW_MAX_PAYLOAD_BYTES",
        None,
        "Largest serialized inputs, output or message.",
    )
    strict_versions: bool = _setting(
        False,
        "PGFLOW_STRICT_VERSIONS",
        None,
        "Workers start only workflows enqueued by their own version (default: any version "
        "that knows the name may start a workflow that never started).",
    )
    max_recovery_attempts: int = _setting(
        10,
        "PGFLOW_MAX_RECOVERY_ATTEMPTS",
        None,
        "Default crashes a workflow may survive before MAX_RECOVERY_ATTEMPTS_EXCEEDED.",
    )
    processes: int = _setting(
        0, "PGFLOW_PROCESSES", "-P/--processes", "Worker processes (0: the number of cores)."
    )
    threads: int = _setting(4, "PGFLOW_THREADS", "-c/--threads", "Threads per worker process.")
    queues: tuple[str, ...] = _setting(
        (), "PGFLOW_QUEUES", "-Q/--queues", "Comma-separated queues to serve (default: all)."
    )
    grace: float = _setting(
        30.0, "PGFLOW_GRACE", "--grace", "Seconds in-flight work may finish after SIGTERM."
    )
    max_jobs_per_child: int = _setting(
        0,
        "PGFLOW_MAX_JOBS_PER_CHILD",
        "--max-jobs-per-child",
        "Replace a worker process after N workflows (0: never).",
    )
    child_timeout: float = _setting(
        60.0,
        "PGFLOW_CHILD_TIMEOUT",
        "--child-timeout",
        "Seconds a worker process may go without its main loop turning (or starting up) "
        "before the supervisor kills and replaces it.",
    )
    burst: bool = _setting(
        False,
        "PGFLOW_BURST",
        "--burst",
        "Exit once the queues hold nothing this worker could run now.",
    )
    burst_wait_delayed: bool = _setting(
        False,
        "PGFLOW_BURST_WAIT_DELAYED",
        "--burst-wait-delayed",
        "With --burst, also wait for delayed work to come due (else report it and exit).",
    )
    retention: str | None = _setting(
        None,
        "PGFLOW_RETENTION",
        None,
        "Workers delete finished workflows that ended longer ago than this (e.g. 30d), one "
        "process of the cluster at a time, every few minutes (default: off; pgflow prune "
        "does it by hand).",
    )
    metrics_port: int = _setting(
        0,
        "PGFLOW_METRICS_PORT",
        "--metrics-port",
        "Serve Prometheus metrics (/metrics) and health (/healthz) on this port (0: off; "
        "needs pip install 'pgflow[metrics]').",
    )
    metrics_host: str = _setting(
        "127.0.0.1",
        "PGFLOW_METRICS_HOST",
        None,
        "Address the metrics port listens on (default: this machine only; 0.0.0.0 for a "
        "Prometheus or a probe elsewhere).",
    )
    sleep_threshold: float = _setting(
        30.0,
        "PGFLOW_SLEEP_THRESHOLD",
        None,
        "A queued workflow sleeping longer than this gives its thread back.",
    )

    # Names whose value was derived, not given (the heartbeat interval from the timeout):
    # a higher layer that changes the timeout derives it again.
    _derived: frozenset[str] = field(
        default=frozenset(),
        init=False,
        repr=False,
        compare=False,
        metadata={"env": None, "flag": None},
    )

    @classmethod
    def resolve(
        cls,
        code: Mapping[str, Any] | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """The effective settings: ``flags`` (given on the command line) over ``PGFLOW_*``
        variables over ``code`` (values the application declared) over the defaults. A None
        value means "not given" at its layer.

        >>> Settings.resolve(code={"threads": 2}, environ={"PGFLOW_THREADS": "8"}).threads
        8
        """
        values: dict[str, Any] = {}
        for layer in (code or {}, env_values(environ), flags or {}):
            values.update({k: v for k, v in layer.items() if v is not None})
        if isinstance(values.get("queues"), str):
            values["queues"] = _split_queues(values["queues"])
        derived: frozenset[str] = frozenset()
        if "heartbeat_interval" not in values and "heartbeat_timeout" in values:
            values["heartbeat_interval"] = float(values["heartbeat_timeout"]) / 3
            derived = frozenset({"heartbeat_interval"})
        settings = cls(**values)
        object.__setattr__(settings, "_derived", derived)
        return settings.validated()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``PGFLOW_*`` variables, then explicit overrides (None = not given)."""
        return cls.resolve(flags=overrides, environ=environ)

    def given(self) -> dict[str, Any]:
        """The values that differ from the defaults and were not derived: what a Settings
        built in code declares (the layer below the environment)."""
        return {
            f.name: getattr(self, f.name)
            for f in _fields()
            if f.name not in self._derived and getattr(self, f.name) != f.default
        }

    def validated(self) -> Settings:
        if self.serializer not in ("json", "pickle"):
            raise ConfigurationError(
                f"serializer must be 'json' or 'pickle', not {self.serializer!r}"
            )
        if self.log_format not in ("auto", "console", "json"):
            raise ConfigurationError(
                f"log format must be auto, console or json, not {self.log_format!r}"
            )
        if self.heartbeat_interval <= 0 or self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                "heartbeat timeout must be longer than the heartbeat interval "
                f"(got timeout {self.heartbeat_timeout:g} s and interval "
                f"{self.heartbeat_interval:g} s); set both, or only the timeout (the interval "
                "is then a third of it)"
            )
        if not self.child_timeout > 0:
            raise ConfigurationError(f"child timeout must be > 0 (got {self.child_timeout})")
        if self.threads < 1 or self.processes < 0:
            raise ConfigurationError("threads must be ≥ 1 and processes ≥ 0")
        check_payload_limit(self.max_payload_bytes)
        if self.app_version is not None:
            check_text("app_version (PGFLOW_APP_VERSION)", self.app_version)
        check_count(
            "max_recovery_attempts (PGFLOW_MAX_RECOVERY_ATTEMPTS)", self.max_recovery_attempts
        )
        if self.pool_size < 0 or not self.pool_idle_timeout > 0:
            raise ConfigurationError(
                "pool size must be ≥ 0 (0: threads + 3) and the pool idle timeout > 0 "
                f"(got {self.pool_size} and {self.pool_idle_timeout})"
            )
        if (
            self.retention is not None
            and not parse_duration(self.retention, what="retention (PGFLOW_RETENTION)") > 0
        ):
            raise ConfigurationError(
                f"retention (PGFLOW_RETENTION) must be longer than 0, not {self.retention!r}; "
                "leave it unset for none"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError(
                f"metrics port must be 0 (off) to 65535 (got {self.metrics_port})"
            )
        validate_schema(self.schema)
        return self

    @property
    def retention_seconds(self) -> float | None:
        """The ``retention`` setting in seconds (None: off)."""
        return None if self.retention is None else parse_duration(self.retention)

    @property
    def connections(self) -> int:
        """The pool size in effect: ``pool_size``, else one session per workflow thread plus
        the claim loop, the heartbeat and the completer (so no thread waits for one)."""
        return self.pool_size or self.threads + 3

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        object.__setattr__(new, "_derived", self._derived - changes.keys())
        return new.validated()


def _fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Settings) if f.metadata.get("env")]


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given by ``PGFLOW_*`` variables (empty ones are not given)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in _fields():
        raw = env.get(f.metadata["env"])
        if raw not in (None, ""):
            values[f.name] = _parse(f, raw)
    return values


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def validate_schema(schema: str) -> str:
    """Refuse a schema name that is not a plain lower-case identifier (before connecting)."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use 1-40 characters of a-z, 0-9 and _, "
            "starting with a letter or _"
        )
    return schema


def _split_queues(raw: str) -> tuple[str, ...]:
    return tuple(q.strip() for q in raw.split(",") if q.strip())


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("tuple"):
            return _split_queues(raw)
    except ValueError:
        raise ConfigurationError(
            f"{f.metadata['env']}={raw!r} is not a valid {kind.split(' ')[0]}"
        ) from None
    return raw
