"""Every failure as a JSON body ``{"error": "...", "status": N}`` that names the problem.

The project's own errors (:mod:`whyclip.store.errors`) map to 4xx in one handler; FastAPI's
validation errors become a 422 that names each bad field; an unexpected exception is logged
with its traceback under a new request id, and answered 500 with that id but without its
message (which could carry paths or data)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from whyclip.store import EncoderMismatch, InputError, LibraryNotFound, ModelLoadError, NoStore, WhyclipError

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "X-Request-ID"  # on a 500, the id its traceback is logged under

STATUS_OF = (  # first match wins: subclasses before their bases
    (NoStore, 404),
    (LibraryNotFound, 404),
    (EncoderMismatch, 409),
    (InputError, 422),
    (ModelLoadError, 503),
    (WhyclipError, 409),  # the store is inconsistent for this request (e.g. a half-deleted version)
)


class ErrorBody(BaseModel):
    error: str
    status: int


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503, 504)
}


class ApiError(Exception):
    """A request the service refuses, with its status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def status_of(exc: WhyclipError) -> int:
    return next(code for kind, code in STATUS_OF if isinstance(exc, kind))


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_req: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(WhyclipError)
    async def _whyclip(_req: Request, exc: WhyclipError):
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            what = "missing" if e.get("type") == "missing" else e.get("msg", "invalid")
            problems.append(f"{_field(e.get('loc', ()))}: {what}")
        return error_response(422, "bad request: " + "; ".join(problems[:10]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception):
        request_id = uuid.uuid4().hex[:16]
        log.error("unexpected error in %s %s, request id %s", req.method, req.url.path, request_id, exc_info=exc)
        return error_response(
            500,
            f"internal error: the server logged it with request id {request_id}",
            {REQUEST_ID_HEADER: request_id},
        )
