"""A JWKS served over real HTTP on 127.0.0.1, as Supabase Auth serves it, counting fetches.

Tests change what it serves (`keys`, `status`, `body`) or make it hang, and await
the n-th fetch instead of sleeping.
"""

import asyncio
import contextlib
import json
from typing import Any

from backend.embedded import HOST, free_port

PATH = "/auth/v1/.well-known/jwks.json"


class JwksServer:
    def __init__(self) -> None:
        self.keys: list[Any] = []  # JWKs, or anything a broken JWKS might hold
        self.status = 200
        self.body: bytes | None = None  # served instead of the JWKS when set
        self.hang = False  # accept the request and never answer
        self.fetches = 0
        self.port = free_port()
        self._fetched = asyncio.Condition()
        self._released = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    async def __aenter__(self) -> "JwksServer":
        self._server = await asyncio.start_server(self._serve, HOST, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_for_fetches(self, count: int) -> None:
        async with self._fetched:
            await asyncio.wait_for(self._fetched.wait_for(lambda: self.fetches >= count), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            async with self._fetched:
                self.fetches += 1
                self._fetched.notify_all()
            if self.hang:
                await self._released.wait()
                return
            writer.write(self._response(request.split(b" ", 2)[1].decode()))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up: that is what some tests are about
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _response(self, path: str) -> bytes:
        status, body = self.status, self.body
        if path != PATH:
            status, body = 404, b'{"message": "not found"}'
        elif body is None:
            body = json.dumps({"keys": self.keys}).encode()
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body
