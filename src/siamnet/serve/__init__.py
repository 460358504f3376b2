"""Serving a trained model over HTTP (the optional ``serve`` extra).

`create_app` builds the web application (FastAPI): ``POST /compare``, ``/embed``, ``/classify``
and ``/search`` (several images per request), ``GET /health`` and ``/info``, an OpenAPI
description at ``/docs`` and a page to try the model at ``/``. `ModelService` holds the model,
the support set and the gallery, loaded once, and answers requests safely from many threads,
embedding the images of requests that arrive together in one model call
(`siamnet.serve.batching`); it needs no web framework.

The service has no authentication. It answers only requests addressed to an allowed host name
(loopback by default, `siamnet.serve.hosts`), caps and times the reading of each request
(`siamnet.serve.limits`), bounds the requests it handles at once and queues the rest for a
bounded time (`siamnet.serve.admission`), and bounds open connections and answers malformed
requests in JSON (`siamnet.serve.server`); to expose it, put it behind a reverse proxy that
authenticates.
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
