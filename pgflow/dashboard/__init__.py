"""pgflow's web dashboard: an ASGI application (Starlette, Jinja2, htmx) to serve with
``pgflow dashboard`` or to mount in an existing app. Needs ``pip install 'pgflow[dashboard]'``.

>>> from pgflow.dashboard import create_app
>>> asgi_app = create_app("postgresql://localhost/shop", admin_token="s3cret")
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
