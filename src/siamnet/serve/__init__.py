"""Serving a trained model over HTTP (the optional ``serve`` extra).

`create_app` builds the web application (FastAPI): ``POST /compare``, ``/classify`` and
``/search``, ``GET /health`` and ``/info``, an OpenAPI description at ``/docs`` and a page to
try the model at ``/``. `ModelService` holds the model, the support set and the gallery, loaded
once, and answers requests safely from many threads; it needs no web framework.

The service has no authentication. It answers only requests addressed to an allowed host name
(loopback by default, `siamnet.serve.hosts`), caps and times the reading of each request
(`siamnet.serve.limits`), and bounds the connections it handles (`siamnet.serve.server`); to
expose it, put it behind a reverse proxy that authenticates.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from siamnet.errors import ArgumentError

__all__ = ["create_app", "require_serve_extra"]

#: Import names of the serve extra's packages, with the package to install for each.
_EXTRA_MODULES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "python_multipart|multipart": "python-multipart",
}


def require_serve_extra() -> None:
    """Raise `ArgumentError` naming what to install when a package of the extra is missing."""
    missing = [
        package
        for modules, package in _EXTRA_MODULES.items()
        if not any(importlib.util.find_spec(m) is not None for m in modules.split("|"))
    ]
    if missing:
        raise ArgumentError(
            f"serving needs the serve extra ({', '.join(missing)} not installed): "
            "pip install 'siamnet[serve]'"
        )


def __getattr__(name: str) -> Any:
    if name == "create_app":
        require_serve_extra()
        from siamnet.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'siamnet.serve' has no attribute {name!r}")
