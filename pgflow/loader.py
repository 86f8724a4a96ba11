"""Import a task module and find its App (``pkg.module[:attribute]``), failing fast and clearly."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .app import App


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
    except ImportError as exc:
        raise ConfigurationError(f"cannot import task module {module_name!r}: {exc}") from exc
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
        f"-A {module_name}:ATTRIBUTE")
