"""The one place errors become HTTP responses, all in the shape `{code, message, details}`."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import logs
from backend.errors import AppError

log = logging.getLogger(__name__)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(exc.body(), status_code=exc.status)


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
        error = AppError(422, "INVALID_JSON", "the body is not valid JSON", {"errors": problems})
    else:
        error = AppError(422, "VALIDATION_ERROR", "the request is not valid", {"errors": problems})
    return JSONResponse(error.body(), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 400: "BAD_REQUEST"}
    code = codes.get(exc.status_code, "HTTP_ERROR")
    error = AppError(exc.status_code, code, str(exc.detail))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)


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
