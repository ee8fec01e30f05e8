"""Errors of the HTTP API: `ApiError` carries a status, a stable code and a message, and the
handlers installed by `install_handlers` turn it, FastAPI's validation errors, unknown routes and
unexpected failures alike into `{"error": {"code": ..., "message": ...}}` JSON."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# Codes for the statuses Starlette raises by itself (unknown route, wrong method, ...).
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                422: "invalid_request", 429: "too_many_requests"}


class ApiError(Exception):
    """An expected failure of a request, answered with `status` and a stable `code`."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def _plain_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's error list without the parts that may not be JSON (the input, exceptions)."""
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in errors]


def validation_error(errors: Any, where: str = "request") -> ApiError:
    """An `invalid_request` ApiError for pydantic validation `errors`."""
    details = _plain_details(errors)
    first = details[0] if details else {"loc": [], "msg": "invalid"}
    field = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "header"))
    return ApiError(422, "invalid_request",
                    f"invalid {where}: {field + ': ' if field else ''}{first['msg']}", details)


class RefuseNul:
    """ASGI middleware: a NUL character in the path or query string is refused with 422 before
    any route sees it (PostgreSQL cannot store or compare it; no honest client sends it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("query_string", b"").lower()
            if "\x00" in scope.get("path", "") or b"%00" in raw or b"\x00" in raw:
                response = JSONResponse(error_body(
                    "invalid_request", "the URL must not contain NUL characters"), 422)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


API_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


class ApiHeaders:
    """ASGI middleware: every response says `Cache-Control: no-store` (reports and clips are
    not for shared caches) and `X-Content-Type-Options: nosniff`, unless it set its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in API_HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as JSON with a stable code; every response gets the
    `API_HEADERS`."""
    app.add_middleware(RefuseNul)
    app.add_middleware(ApiHeaders)  # outermost: the NUL refusals get the headers too

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error_body(error.code, error.message, error.details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    exc.orig)
        return JSONResponse(error_body("database_unavailable", "the database is unavailable; "
                                       "try again shortly"), 503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error; see the server log"),
                            500)
