"""The HTTP service (FastAPI): compare, embed, classify and search endpoints, and a page to
try them.

Images are uploaded as multipart/form-data: ``/compare`` takes fields ``a`` and ``b``;
``/embed`` one or more ``images`` (the field repeated); ``/classify`` and ``/search`` either one
``image`` (answered as one result) or one or more ``images`` (answered as ``results``, one per
image, in order). Query parameters have the command line's names (``top_k`` as ``--top-k``,
``reject_below`` as ``--reject-below``); an unknown one is refused.

Every error is JSON ``{"detail": "<one line>"}``: 400 for a bad upload or argument (not an
image, a damaged or refused one, empty, a missing field, an unknown query parameter), for a
``Host`` header that is not an allowed name and for a malformed request, 413 for a body over
the upload cap (counted while reading), 408 for a body that does not arrive in time, 404 for an
unknown path or support class, 409 when the service was started without the support set or
gallery a request needs, 503 when it is too busy (`siamnet.serve.admission`). The OpenAPI
description is at ``/openapi.json``, browsable at ``/docs``.

There is no authentication: anyone who can reach the service can use it. By default it
answers only requests addressed to 127.0.0.1, localhost or [::1]; to expose it, put it behind
a reverse proxy that authenticates, and allow the name the proxy forwards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from siamnet import __version__
from siamnet.errors import ArgumentError, SiamnetError
from siamnet.gallery import shown_name
from siamnet.serve.admission import Admission
from siamnet.serve.hosts import LOOPBACK_HOSTS, HostCheck
from siamnet.serve.limits import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    QUEUE_PER_SLOT,
    UploadLimit,
)
from siamnet.serve.schemas import (
    ClassifyAnswer,
    ClassifyManyAnswer,
    CompareAnswer,
    EmbedAnswer,
    ErrorAnswer,
    HealthAnswer,
    InfoAnswer,
    SearchAnswer,
    SearchManyAnswer,
)
from siamnet.serve.service import (
    MAX_IMAGES,
    MAX_TOP_K,
    ModelService,
    NotAvailable,
    NotFound,
    Upload,
)

STATIC = Path(__file__).with_name("static")
logger = logging.getLogger("siamnet.serve")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorAnswer,
        "description": "not an image, a damaged or refused one, empty, or a field is missing",
    },
    408: {"model": ErrorAnswer, "description": "the upload did not arrive in time"},
    413: {"model": ErrorAnswer, "description": "the upload is larger than the service accepts"},
    503: {"model": ErrorAnswer, "description": "too busy: no turn within the queue timeout"},
}

#: Description of the fields of /classify and /search.
ONE_IMAGE = "an image file; the answer is one result"
MANY_IMAGES = (
    f"one or more image files (repeat the field, at most {MAX_IMAGES}); the answer has "
    "'results', one per image in order"
)


def create_app(
    ckpt_path: str | os.PathLike[str],
    support_dir: str | os.PathLike[str] | None = None,
    gallery_dir: str | os.PathLike[str] | None = None,
    max_upload_bytes: int = 5_000_000,
    device: torch.device | str = "cpu",
    threshold: float | None = None,
    invert: bool = False,
    scoring: str = "mean",
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
) -> FastAPI:
    """The web application for a checkpoint; the support folder is embedded and the gallery
    read (or embedded, for a folder of images) here, once. See `ModelService` for the model
    and batching options and `build_app` for the others.
    """
    service = ModelService.load(
        ckpt_path,
        support_dir,
        gallery_dir,
        device,
        threshold,
        invert,
        scoring,
        batch_window_ms,
        max_batch,
    )
    return build_app(
        service, max_upload_bytes, allowed_hosts, read_timeout, max_connections, queue_timeout
    )


def build_app(
    service: ModelService,
    max_upload_bytes: int = 5_000_000,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
) -> FastAPI:
    """The web application answering for `service`.

    Requests must name one of `allowed_hosts` in their ``Host`` header (see `HostCheck`;
    ``["*"]`` allows any). Request bodies are capped at `max_upload_bytes` and must arrive
    within `read_timeout` seconds of their headers (None: no deadline). At most
    `max_connections` requests are handled at once; more wait up to `queue_timeout` seconds
    for a turn (`Admission`; ``GET /health`` never waits).
    """
    app = FastAPI(
        title="siamnet",
        version=__version__,
        description="Compare two images, classify one against a support set, or search a "
        "gallery with a trained Siamese network. Images are uploaded as multipart/form-data.",
    )
    app.state.service = service
    app.state.max_upload_bytes = max_upload_bytes
    _add_error_handlers(app)
    _add_routes(app, service, max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes, read_timeout=read_timeout)
    app.add_middleware(
        Admission,
        slots=max_connections,
        queue_timeout=queue_timeout,
        max_waiting=QUEUE_PER_SLOT * max_connections,
        drain_bytes=max(64 << 20, 8 * max_upload_bytes),
        read_timeout=read_timeout,
    )
    app.add_middleware(HostCheck, allowed=list(allowed_hosts))  # outermost: before any body
    return app


def _add_routes(app: FastAPI, service: ModelService, max_upload_bytes: int) -> None:
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    # Cheap answers are coroutines, run on the event loop: they answer at once, even while
    # every worker thread is busy with (or waiting for) the model.

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", response_model=HealthAnswer, summary="Is the service up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", response_model=InfoAnswer, summary="The model and data being served")
    async def info() -> dict[str, Any]:
        return {**service.info(), "max_upload_bytes": max_upload_bytes}

    @app.post(
        "/compare",
        response_model=CompareAnswer,
        responses=_ERRORS,
        summary="Score two images and say whether they show the same class",
        dependencies=[Depends(query_parameters())],
    )
    def compare(
        a: Annotated[UploadFile, File(description="an image file")],
        b: Annotated[UploadFile, File(description="another image file")],
    ) -> dict[str, Any]:
        return service.compare(_read(a), _read(b), _name(a, "a"), _name(b, "b"))

    @app.post(
        "/embed",
        response_model=EmbedAnswer,
        responses=_ERRORS,
        summary="The embedding (a vector) of each image, with the model that made it",
        dependencies=[Depends(query_parameters())],
    )
    def embed(
        images: Annotated[
            list[UploadFile],
            File(description=f"one or more image files (repeat the field, at most {MAX_IMAGES})"),
        ],
    ) -> dict[str, Any]:
        return service.embed(_uploads(images, "images"))

    @app.post(
        "/classify",
        response_model=ClassifyAnswer | ClassifyManyAnswer,
        responses={**_ERRORS, 409: {"model": ErrorAnswer, "description": "no support set"}},
        summary="Rank the support-set classes for one image, or for each of several",
        dependencies=[Depends(query_parameters("reject_below"))],
    )
    def classify(
        request: Request,
        image: Annotated[UploadFile | None, File(description=ONE_IMAGE)] = None,
        images: Annotated[list[UploadFile] | None, File(description=MANY_IMAGES)] = None,
        reject_below: Annotated[
            float | None,
            Query(description="answer unknown when the best class scores below this"),
        ] = None,
    ) -> dict[str, Any]:
        uploads, many = _queries(image, images)
        answers = service.classify_many(uploads, reject_below)
        root = request.scope.get("root_path", "")
        for answer in answers:
            for row in answer["ranking"]:
                row["image_url"] = f"{root}/support/{row['class_index']}/image"
        if many:
            return {"reject_below": answers[0]["reject_below"], "results": answers}
        return answers[0]

    @app.post(
        "/search",
        response_model=SearchAnswer | SearchManyAnswer,
        responses={**_ERRORS, 409: {"model": ErrorAnswer, "description": "no gallery"}},
        summary="The gallery items most similar to one image, or to each of several",
        dependencies=[Depends(query_parameters("top_k", "k"))],
    )
    def search(
        image: Annotated[UploadFile | None, File(description=ONE_IMAGE)] = None,
        images: Annotated[list[UploadFile] | None, File(description=MANY_IMAGES)] = None,
        top_k: Annotated[
            int | None, Query(ge=1, le=MAX_TOP_K, description="items to return per image")
        ] = None,
        k: Annotated[
            int | None, Query(ge=1, le=MAX_TOP_K, description="older name of top_k")
        ] = None,
    ) -> dict[str, Any]:
        if top_k is not None and k is not None and top_k != k:
            raise ArgumentError(f"query parameters top_k {top_k} and k {k}: give only top_k")
        count = top_k or k or 5
        uploads, many = _queries(image, images)
        matches = service.search_many(uploads, count)
        head = {
            "top_k": count,
            "k": count,
            "threshold": service.threshold,
            "search": service.search_method(),
        }
        if many:
            return {**head, "results": [{"matches": m} for m in matches]}
        return {**head, "matches": matches[0]}

    @app.get(
        "/support/{class_index}/image",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "a PNG"},
            404: {"model": ErrorAnswer, "description": "no such class"},
            409: {"model": ErrorAnswer, "description": "no support set"},
        },
        summary="One support image of a class, as PNG at the model's input size",
    )
    async def support_image(class_index: int) -> Response:
        png = service.support_thumbnail(class_index)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def query_parameters(*names: str) -> Any:
    """A dependency refusing query parameters other than `names`, in one line naming them
    (a coroutine: it runs on the event loop, with no hop to a worker thread)."""
    allowed = frozenset(names)

    async def check(request: Request) -> None:
        unknown = sorted({key for key in request.query_params if key not in allowed})
        if unknown:
            takes = ", ".join(sorted(allowed)) if allowed else "none"
            shown = ", ".join(repr(shown_name(key)[:40]) for key in unknown)
            raise ArgumentError(
                f"unknown query parameter {shown}: {request.url.path} takes {takes}"
            )

    return check


def _queries(
    image: UploadFile | None, images: list[UploadFile] | None
) -> tuple[list[Upload], bool]:
    """The query uploads of /classify or /search, and whether they came as 'images' (answered
    as a list of results) rather than one 'image'."""
    if (image is None) == (images is None):
        raise ArgumentError(
            "send either field 'image' (one image file) or field 'images' (one or more), "
            "as multipart/form-data"
        )
    if image is not None:
        return [(_read(image), _name(image, "image"))], False
    return _uploads(images or [], "images"), True


def _uploads(files: list[UploadFile], field: str) -> list[Upload]:
    """The bytes of each uploaded file of a repeated field, with its name for errors."""
    if len(files) > MAX_IMAGES:
        raise ArgumentError(f"field '{field}': {len(files)} files; at most {MAX_IMAGES} a request")
    return [(_read(f), _name(f, f"{field}[{i}]")) for i, f in enumerate(files)]


def _read(upload: UploadFile) -> bytes:
    """The bytes of an uploaded file (already within the upload cap)."""
    upload.file.seek(0)
    return upload.file.read()


def _name(upload: UploadFile, field: str) -> str:
    """How errors name an upload: its field and, when sent, its file name."""
    filename = " ".join((upload.filename or "").split())[:80]
    return f"field '{field}' ({filename})" if filename else f"field '{field}'"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(NotAvailable)
    async def not_available(_: Request, exc: NotAvailable) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(SiamnetError)
    async def bad_input(_: Request, exc: SiamnetError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, describe_validation_error(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("error answering %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the service's log")


def describe_validation_error(exc: RequestValidationError) -> str:
    """One line naming each field or parameter that is missing or wrong."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("body", "".join(loc))
        kind = {"query": "query parameter", "path": "path parameter"}.get(where, "field")
        if error.get("type") == "missing" and kind == "field":
            parts.append(
                f"missing field '{name}': expected an image file uploaded as multipart/form-data"
            )
        elif error.get("type") == "missing":
            parts.append(f"missing {kind} '{name}'")
        elif kind == "field":
            parts.append(f"field '{name}': expected an uploaded image file, found a text value")
        else:
            parts.append(f"{kind} '{name}': {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "bad request"


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": shown_name(" ".join(detail.split()))}, status_code=status)
