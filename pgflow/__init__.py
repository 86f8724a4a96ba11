"""pgflow: durable workflows and a Celery-like worker, with PostgreSQL as the only moving part.

>>> import pgflow
>>> app = pgflow.App("shop")
>>> @app.step(retries=3)
... def charge(card: str, cents: int) -> str: ...
>>> @app.workflow()
... def checkout(card: str) -> bool:
...     charge(card, 500)
...     return True
"""

from __future__ import annotations

from .activity import ActiveWorkflow, DeadExecutor, WorkerInfo
from .app import App
from .client import Client
from .context import db, workflow_id
from .diagnosis import Reason
from .errors import (
    ConfigurationError,
    ConnectionRejected,
    DatabaseError,
    DatabaseUnavailable,
    Deduplicated,
    FencedOut,
    InvalidValue,
    MaxRecoveryAttemptsExceeded,
    NonDeterminism,
    PermissionDenied,
    PgflowError,
    SchemaNotMigrated,
    SerializationError,
    StepTimeLimitExceeded,
    TransactionControlError,
    UnknownWorkflow,
    UnregisteredFunction,
    WorkflowCancelled,
    WorkflowConflict,
    WorkflowFailed,
    WorkflowParked,
    WorkflowTimeout,
)
from .explain import Explanation
from .handles import WorkflowHandle
from .logs import stderr_unless_configured
from .messages import get_event, recv, send, set_event, sleep
from .queues import Queue, Rate
from .records import Status, StepRecord, WorkflowStatus
from .settings import Settings

# pgflow's log lines go to standard error, never into a program's standard output.
stderr_unless_configured()

__version__ = "0.1.0"

__all__ = [
    "ActiveWorkflow",
    "App",
    "Client",
    "ConfigurationError",
    "ConnectionRejected",
    "DatabaseError",
    "DatabaseUnavailable",
    "DeadExecutor",
    "Deduplicated",
    "Explanation",
    "FencedOut",
    "InvalidValue",
    "MaxRecoveryAttemptsExceeded",
    "NonDeterminism",
    "PermissionDenied",
    "PgflowError",
    "Queue",
    "Rate",
    "Reason",
    "SchemaNotMigrated",
    "SerializationError",
    "Settings",
    "Status",
    "StepRecord",
    "StepTimeLimitExceeded",
    "TransactionControlError",
    "UnknownWorkflow",
    "UnregisteredFunction",
    "WorkerInfo",
    "WorkflowCancelled",
    "WorkflowConflict",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowParked",
    "WorkflowStatus",
    "WorkflowTimeout",
    "db",
    "get_event",
    "recv",
    "send",
    "set_event",
    "sleep",
    "workflow_id",
]
