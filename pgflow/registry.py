"""Names -> workflow and step definitions, and the application version derived from them."""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from .errors import ConfigurationError, UnregisteredFunction
from .limits import check_count, check_id, check_seconds


class Default(Enum):
    """A parameter not given at all, as opposed to one given as None."""

    APP = "the app's setting"


#: ``max_recovery_attempts`` not given: the app's ``max_recovery_attempts`` setting applies
#: (``None`` given means unlimited).
APP_DEFAULT: Literal[Default.APP] = Default.APP

RecoveryLimit = int | None | Literal[Default.APP]


def recovery_limit(given: RecoveryLimit, app_default: int | None) -> int | None:
    """The stored limit: the value given (None: unlimited), else the app's default."""
    return app_default if given is APP_DEFAULT else given


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    fn: Callable[..., Any]
    max_recovery_attempts: RecoveryLimit
    timeout: float | None

    def __post_init__(self) -> None:
        check_id("workflow name", self.name)
        if self.max_recovery_attempts is not APP_DEFAULT:
            check_count("max_recovery_attempts", self.max_recovery_attempts)
        check_seconds("timeout", self.timeout)


@dataclass(frozen=True)
class StepDef:
    name: str
    fn: Callable[..., Any]
    kind: str  # "step" or "transaction"

    def __post_init__(self) -> None:
        check_id("step name", self.name)


def qualified_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``; a module run as a script (``python -m pkg.mod``) is named by its
    import name, so the enqueuing script and the worker agree on names."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    return f"{module}.{fn.__qualname__}"


class Registry:
    """The workflows and steps of one App, by name."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDef] = {}
        self.steps: dict[str, StepDef] = {}

    def add_workflow(self, wf: WorkflowDef) -> None:
        if wf.name in self.workflows and self.workflows[wf.name].fn is not wf.fn:
            raise ConfigurationError(
                f"two workflows are named {wf.name!r}; give one a name= of its own"
            )
        self.workflows[wf.name] = wf

    def add_step(self, step: StepDef) -> None:
        if step.name in self.steps and self.steps[step.name].fn is not step.fn:
            raise ConfigurationError(
                f"two steps are named {step.name!r}; give one a name= of its own"
            )
        self.steps[step.name] = step

    def resolve(self, fn: Callable[..., Any] | str) -> WorkflowDef:
        """The definition of a workflow given as its decorated function or its name."""
        if isinstance(fn, str):
            return self.workflow(fn)
        wf = getattr(fn, "__pgflow_workflow__", None)
        if not isinstance(wf, WorkflowDef):
            raise ConfigurationError(
                f"{getattr(fn, '__name__', fn)!r} is not a workflow; decorate it with "
                "@app.workflow()"
            )
        return wf

    def workflow(self, name: str) -> WorkflowDef:
        try:
            return self.workflows[name]
        except KeyError:
            raise UnregisteredFunction(
                f"no workflow named {name!r} is registered in this application "
                f"(known: {', '.join(sorted(self.workflows)) or 'none'}); import the module "
                "that defines it"
            ) from None

    def version_hash(self) -> str:
        """A hash of every registered function's source (or bytecode when source is missing)."""
        digest = hashlib.sha256()
        for kind, table in (("workflow", self.workflows), ("step", self.steps)):
            for name in sorted(table):
                fn = table[name].fn
                digest.update(f"{kind}:{name}\n".encode())
                try:
                    digest.update(inspect.getsource(fn).encode())
                except (OSError, TypeError):
                    code = getattr(fn, "__code__", None)
                    digest.update(code.co_code if code is not None else name.encode())
        return digest.hexdigest()[:16]


def refuse_async(fn: Callable[..., Any], kind: str) -> None:
    """An ``async def`` would run as a coroutine object nobody awaits (and fail to serialize
    it): refuse it when it is declared, until pgflow runs coroutines."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(
            f"{getattr(fn, '__qualname__', fn)!r} is an async def: pgflow runs plain (sync) "
            f"functions as a {kind} for now; make it a def (call async code inside it with "
            "asyncio.run(...))"
        )
