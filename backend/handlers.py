"""The one place errors become HTTP responses, all in the shape `{code, message, details}`."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import logs
from backend.errors import AppError

log = logging.getLogger(__name__)


def error_response(error: AppError) -> JSONResponse:
    """The one answer an `AppError` gets, wherever it was caught (`backend.order_lane`
    catches its own, in front of the router)."""
    return JSONResponse(error.body(), status_code=error.status, headers=_headers(error))


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


def _headers(error: AppError) -> dict[str, str] | None:
    """What HTTP says must come with some statuses: how to authenticate, when to retry."""
    if error.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if error.status == 429 and "retry_after" in error.details:
        return {"Retry-After": str(error.details["retry_after"])}
    return None


def _invalid_json(problems: list[dict[str, Any]]) -> JSONResponse:
    error = AppError(422, "INVALID_JSON", "the body is not valid JSON", {"errors": problems})
    return JSONResponse(error.body(), status_code=422)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "location": [str(part) for part in error["loc"]],
            "problem": error["msg"],
        }
        for error in exc.errors()
    ]
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        return _invalid_json(problems)
    error = AppError(422, "VALIDATION_ERROR", "the request is not valid", {"errors": problems})
    return JSONResponse(error.body(), status_code=422)


def _unreadable_body(exc: StarletteHTTPException) -> BaseException | None:
    """What stopped FastAPI reading a JSON body that its decoder did not call malformed:
    bytes that are not UTF-8, nesting deeper than the decoder's recursion, an integer
    past Python's digit limit. FastAPI answers those 400 with the cause chained; to a
    client they are unreadable JSON like any other."""
    return exc.__cause__ if exc.status_code == 400 else None


def _allowed_methods(request: Request) -> str | None:
    """Every method the API document gives the path. Starlette's 405 names only the
    first matching route's, and GET and POST /products, say, are two routes."""
    for template, operations in request.app.openapi()["paths"].items():
        pattern, _, _ = compile_path(template)
        if pattern.match(request.url.path):
            return ", ".join(sorted(method.upper() for method in operations))
    return None  # not in the document (the dashboard, /docs): Starlette's answer stands


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if cause := _unreadable_body(exc):
        return _invalid_json([{"location": ["body"], "problem": str(cause)}])
    headers = exc.headers
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allowed}
    codes = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    code = codes.get(exc.status_code, "HTTP_ERROR")
    error = AppError(exc.status_code, code, str(exc.detail))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=headers)


class InternalErrorMiddleware:
    """An exception nothing else handled: logged once with its traceback, answered
    with the one error shape (`INTERNAL`, with the request id to look it up by).

    It sits inside the request-id middleware, so the log line and the body carry
    the same id, and it does not re-raise, so the server does not log it again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            rid = logs.request_id.get()
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # too late for a body; the connection closes short
            error = AppError(500, "INTERNAL", "an unexpected error occurred", {"request_id": rid})
            response = JSONResponse(error.body(), status_code=500)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(InternalErrorMiddleware)
