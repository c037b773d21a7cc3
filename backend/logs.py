"""JSON logs, one object a line, each with the node id and the request id."""

import itertools
import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.guards import first_header

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node_id,
            "message": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _OneLine(logging.Filter):
    """A library's expected trouble (asyncpg retrying its pool while the database is
    away) in one line with the error, not a traceback a second."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def configure(node_id: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id))
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not logger.handlers:
            continue  # uvicorn --no-access-log: stay quiet
        logger.handlers = [handler]
        logger.propagate = False
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("asyncpg.pool").addFilter(_OneLine())


class RequestIds:
    """Request ids unique across nodes and restarts, for the cost of a counter.

    A random per-process prefix (64 bits) and a counter (64 bits), 32 hex digits
    as a UUID's would be: a `uuid4` per request drew from the OS's randomness
    every time for the same uniqueness."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


MAX_REQUEST_ID = 128


def given_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's `X-Request-ID`, if it is one we can log and echo safely."""
    given = first_header(headers, b"x-request-id")
    if given is not None and 0 < len(given) <= MAX_REQUEST_ID and given.isprintable():
        return given
    return None


class RequestIdMiddleware:
    """Takes `X-Request-ID` from the client or makes one, logs with it, echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        rid = given_id(scope["headers"]) or self.ids.next()
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(header)
            await send(message)

        token = request_id.set(rid)
        try:
            # A socket's frames carry no headers: its `send` goes through untouched,
            # sparing a wrapper call per message per client.
            await self.app(scope, receive, send_with_id if kind == "http" else send)
        finally:
            request_id.reset(token)
