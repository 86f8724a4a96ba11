"""One frozen Settings: every field's default, ``PGFLOW_*`` variable, CLI flag and help, together.

Read once at start (``Settings.from_env(**overrides)``); never mutated afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError
from .limits import check_count, check_payload_limit, check_text


def _setting(default: Any, env: str, flag: str | None, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "flag": flag, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """pgflow's configuration. Each field documents its variable and flag."""

    database_url: str | None = _setting(
        None, "PGFLOW_DATABASE_URL", "--database-url",
        "PostgreSQL URL. Unset: an embedded server under PGFLOW_HOME is started.")
    schema: str = _setting("pgflow", "PGFLOW_SCHEMA", "--schema",
                           "Schema holding pgflow's tables.")
    home: str = _setting(".pgflow", "PGFLOW_HOME", None,
                         "Folder of the embedded server's data (when no URL is given).")
    serializer: str = _setting("json", "PGFLOW_SERIALIZER", None,
                               "'json' (default) or 'pickle' (opt-in; trusts every writer).")
    app_version: str | None = _setting(
        None, "PGFLOW_APP_VERSION", None,
        "Application version; default: a hash of the registered workflow and step code.")
    log_format: str = _setting("auto", "PGFLOW_LOG_FORMAT", "--log-format",
                               "'console', 'json' or 'auto' (console on a terminal).")
    log_level: str = _setting("info", "PGFLOW_LOG_LEVEL", "--log-level",
                              "debug, info, warning or error.")
    heartbeat_interval: float = _setting(5.0, "PGFLOW_HEARTBEAT_INTERVAL", "--heartbeat-interval",
                                         "Seconds between an executor's heartbeats.")
    heartbeat_timeout: float = _setting(
        30.0, "PGFLOW_HEARTBEAT_TIMEOUT", "--heartbeat-timeout",
        "Seconds without a heartbeat after which an executor is dead and its work adopted.")
    poll_interval: float = _setting(1.0, "PGFLOW_POLL_INTERVAL", "--poll-interval",
                                    "Seconds between claim polls when no NOTIFY arrives.")
    pool_size: int = _setting(
        0, "PGFLOW_POOL_SIZE", "--pool-size",
        "Most pooled connections per process (0: threads + 3, one per workflow thread plus "
        "the claim loop, the heartbeat and the completer).")
    pool_idle_timeout: float = _setting(
        60.0, "PGFLOW_POOL_IDLE_TIMEOUT", "--pool-idle-timeout",
        "Seconds a pooled connection may stay unused before it goes back to the server.")
    auto_migrate: bool = _setting(True, "PGFLOW_AUTO_MIGRATE", None,
                                  "Migrate the schema on first use when the role may.")
    max_payload_bytes: int = _setting(16 * 1024 * 1024, "PGFLOW_MAX_PAYLOAD_BYTES", None,
                                      "Largest serialized inputs, output or message.")
    max_recovery_attempts: int = _setting(
        10, "PGFLOW_MAX_RECOVERY_ATTEMPTS", None,
        "Default crashes a workflow may survive before MAX_RECOVERY_ATTEMPTS_EXCEEDED.")
    processes: int = _setting(0, "PGFLOW_PROCESSES", "-P",
                              "Worker processes (0: the number of cores).")
    threads: int = _setting(4, "PGFLOW_THREADS", "-c", "Threads per worker process.")
    queues: tuple[str, ...] = _setting((), "PGFLOW_QUEUES", "-Q",
                                       "Comma-separated queues to serve (default: all).")
    grace: float = _setting(30.0, "PGFLOW_GRACE", "--grace",
                            "Seconds in-flight work may finish after SIGTERM.")
    max_jobs_per_child: int = _setting(0, "PGFLOW_MAX_JOBS_PER_CHILD", "--max-jobs-per-child",
                                       "Replace a worker process after N workflows (0: never).")
    child_timeout: float = _setting(
        60.0, "PGFLOW_CHILD_TIMEOUT", "--child-timeout",
        "Seconds a worker process may go without its main loop turning (or starting up) "
        "before the supervisor kills and replaces it.")
    burst: bool = _setting(False, "PGFLOW_BURST", "--burst",
                           "Exit once the queues have nothing left to run.")
    sleep_threshold: float = _setting(
        30.0, "PGFLOW_SLEEP_THRESHOLD", None,
        "A queued workflow sleeping longer than this gives its thread back.")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``PGFLOW_*`` variables, then explicit overrides (None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw not in (None, ""):
                values[f.name] = _parse(f, raw)
        for key, value in overrides.items():
            if value is not None:
                values[key] = value
        if "queues" in values and isinstance(values["queues"], str):
            values["queues"] = _split_queues(values["queues"])
        return cls(**values).validated()

    def validated(self) -> Settings:
        if self.serializer not in ("json", "pickle"):
            raise ConfigurationError(
                f"serializer must be 'json' or 'pickle', not {self.serializer!r}")
        if self.log_format not in ("auto", "console", "json"):
            raise ConfigurationError(
                f"log format must be auto, console or json, not {self.log_format!r}")
        if self.heartbeat_interval <= 0 or self.heartbeat_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                "heartbeat timeout must be longer than the heartbeat interval "
                f"(got {self.heartbeat_timeout} and {self.heartbeat_interval})")
        if not self.child_timeout > 0:
            raise ConfigurationError(f"child timeout must be > 0 (got {self.child_timeout})")
        if self.threads < 1 or self.processes < 0:
            raise ConfigurationError("threads must be ≥ 1 and processes ≥ 0")
        check_payload_limit(self.max_payload_bytes)
        if self.app_version is not None:
            check_text("app_version (PGFLOW_APP_VERSION)", self.app_version)
        check_count("max_recovery_attempts (PGFLOW_MAX_RECOVERY_ATTEMPTS)",
                    self.max_recovery_attempts)
        if self.pool_size < 0 or not self.pool_idle_timeout > 0:
            raise ConfigurationError(
                "pool size must be ≥ 0 (0: threads + 3) and the pool idle timeout > 0 "
                f"(got {self.pool_size} and {self.pool_idle_timeout})")
        validate_schema(self.schema)
        return self

    @property
    def connections(self) -> int:
        """The pool size in effect: ``pool_size``, else one session per workflow thread plus
        the claim loop, the heartbeat and the completer (so no thread waits for one)."""
        return self.pool_size or self.threads + 3

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes).validated()


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
            f"{f.metadata['env']}={raw!r} is not a valid {kind.split(' ')[0]}") from None
    return raw
