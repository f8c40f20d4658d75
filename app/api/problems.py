"""Every error leaves as application/problem+json (RFC 9457); nothing leaks a 500 page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    StatementError,
)
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import DomainError

PROBLEM = "application/problem+json"
log = structlog.get_logger(__name__)


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"),
                   "message": e["msg"], "type": e["type"]} for e in exc.errors()]
        return problem(422, "Invalid request", "one or more fields are invalid", errors=errors)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        extra = {"errors": [{"field": exc.field, "message": exc.detail}]} if exc.field else {}
        response = problem(exc.status, exc.title, exc.detail, **extra)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="lethe"'
        return response

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail), str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. 405's Allow
        return response

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (NUL byte, number out of range): the client's input.
        log.info("db.data_error", error=str(exc.orig).splitlines()[0])
        return problem(422, "Invalid request", "a value cannot be stored (out of range or "
                       "contains a NUL byte)", errors=[{"field": None, "message": str(
                           exc.orig).splitlines()[0]}])

    @app.exception_handler(StatementError)
    async def _unbindable(request: Request, exc: StatementError) -> JSONResponse:
        if isinstance(exc.orig, OverflowError):  # a time with no UTC equivalent (year 0/10000)
            return problem(422, "Invalid request", "a date or time is out of range: in UTC it "
                           "must fall within years 1 to 9999")
        return await _unexpected(request, exc)

    @app.exception_handler(IntegrityError)
    async def _raced(request: Request, exc: IntegrityError) -> JSONResponse:
        # A unique key a concurrent request took first: not an outage (503), a conflict. Any
        # other constraint (NOT NULL, a foreign key) is a bug: a 500, logged.
        if not _unique_violation(exc):
            return await _unexpected(request, exc)
        log.info("db.unique_violation", error=str(exc.orig).splitlines()[0])
        return problem(409, "Conflict", "a concurrent request changed the same record first; "
                       "read it again, then retry")

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("db.unavailable", error=str(exc).splitlines()[0])
        response = problem(503, "Database unavailable",
                           "the database cannot be reached; retry shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unhandled", error=str(exc))
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, by header or by counting the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "Request body too large",
                           f"request bodies are limited to {self.max_bytes} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def _unique_violation(exc: IntegrityError) -> bool:
    """Postgres SQLSTATE 23505, or SQLite's message for the same."""
    return (getattr(exc.orig, "sqlstate", None) == "23505"
            or "UNIQUE constraint failed" in str(exc.orig))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class RejectNul:
    """422 for a NUL byte anywhere in the path, query string or JSON body: Postgres text cannot
    hold one, and no legitimate field needs it. Sits inside BodyLimit, so bodies are capped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = None
        if "\x00" in scope.get("path", ""):
            where = "path"
        elif b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            where = "query"
        messages: list[Message] = []
        if where is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, more = b"", True
            while more:
                message = await receive()
                messages.append(message)
                body += message.get("body", b"")
                more = message.get("more_body", False) and message["type"] == "http.request"
            if b"\x00" in body or (b"\\u0000" in body and _json_has_nul(body)):
                where = "body"
        if where is not None:
            response = problem(422, "Invalid request", f"NUL bytes are not allowed ({where})",
                               errors=[{"field": where, "message": "contains a NUL byte"}])
            await response(scope, receive, send)
            return
        if not messages:
            await self.app(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _json_has_nul(body: bytes) -> bool:
    try:
        return _has_nul(json.loads(body))
    except ValueError:
        return False  # not JSON: the route's own validation answers
