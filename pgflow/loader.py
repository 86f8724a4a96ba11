"""Import a task module and find its App (``pkg.module[:attribute]``), failing fast and clearly."""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Collection
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .app import App


def import_failure(module_name: str, exc: BaseException) -> str:
    """One line for an error raised while importing a task module, naming the file and line
    at fault: ``cannot import tasks: SyntaxError at tasks.py:12: invalid syntax``."""
    if isinstance(exc, SyntaxError):  # its own file and line: the traceback ends in importlib
        where, message = _place(exc.filename, exc.lineno), exc.msg
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        user = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
        where = _place(user[-1].filename, user[-1].lineno) if user else None
        message = str(exc).splitlines()[0] if str(exc) else ""
    if where is None and isinstance(exc, ModuleNotFoundError):
        message += " (run from the folder that holds it, or add that folder to PYTHONPATH)"
    head = f"cannot import {module_name}: {type(exc).__name__}"
    return f"{head} at {where}: {message}" if where else f"{head}: {message}"


def _place(filename: str | None, lineno: int | None) -> str | None:
    if not filename:
        return None
    try:
        shown = os.path.relpath(filename)
    except ValueError:
        shown = filename
    if shown.startswith(".."):
        shown = filename
    return f"{shown}:{lineno}" if lineno else shown


def load_app(spec: str) -> App:
    """``pkg.module`` (its one App, or the attribute ``app``) or ``pkg.module:attribute``."""
    from .app import App

    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigurationError("-A needs a module, e.g. -A examples.shop or -A myapp.tasks:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the module's own code may raise anything at import
        raise ConfigurationError(import_failure(module_name, exc)) from None
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, App):
            raise ConfigurationError(f"{module_name}:{attr} is not a pgflow.App")
        return found
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    if isinstance(getattr(module, "app", None), App):
        return module.app  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"module {module_name!r} holds {len(apps)} pgflow.App objects; name one with "
        f"-A {module_name}:ATTRIBUTE"
    )


def forget_app_modules(spec: str, loaded_before: Collection[str]) -> None:
    """Drop from ``sys.modules`` the application's modules imported since ``loaded_before``
    was taken, so that the next :func:`load_app` reads their source again (a worker process
    forked after SIGHUP runs the new code).

    The application's modules: the task module's own package, and any other module from
    outside the interpreter's library folders. Installed libraries and pgflow itself stay
    loaded (re-importing an extension module is not always possible).
    """
    top = spec.partition(":")[0].split(".")[0]
    paths = sysconfig.get_paths()
    libraries = tuple(
        {
            os.path.realpath(paths[k]) + os.sep
            for k in ("stdlib", "platstdlib", "purelib", "platlib")
            if k in paths
        }
    )
    for name, module in list(sys.modules.items()):
        if name in loaded_before or name == "pgflow" or name.startswith("pgflow."):
            continue
        path = getattr(module, "__file__", None)
        if name.split(".")[0] == top or (
            isinstance(path, str) and not os.path.realpath(path).startswith(libraries)
        ):
            del sys.modules[name]
