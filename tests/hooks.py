"""A webhook receiver for tests: an HTTP server in the test's process that keeps
every delivery and answers with the statuses a test asks for."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support import eventually


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next status of `answers` (then 200) and keeps it."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    received: list[Delivery] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Delivery(headers, body))
        status = self.answers.pop(0) if self.answers else 200
        extra = [(b"location", b"https://elsewhere.example/")] if status in (301, 302) else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def receiver(path: str = "/hook") -> AsyncIterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    made = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}{path}")
    server = uvicorn.Server(uvicorn.Config(made, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started, 10, "the receiver started")
        yield made
    finally:
        server.should_exit = True
        await task
        sock.close()
