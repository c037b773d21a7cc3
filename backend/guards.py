"""What every response and every request body go through before any route.

- A body larger than MAX_BODY_BYTES is refused with 413 before it is read
  into memory: at once when Content-Length says so, else as soon as the
  streamed bytes pass the limit.
- The dashboard is served with a Content-Security-Policy that allows only
  this node (and the Supabase project it signs in against), no framing, no
  MIME sniffing and no referrer.
"""

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_TOO_LARGE = 413
_DRAIN_AT_MOST = 16 * 1024 * 1024


def first_header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """An ASGI scope's first header of that (lower-case) name, as Starlette reads it:
    scanned, not copied into a dict, on paths that run for every request."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bool]:
    """The declared Content-Length, and whether a Transfer-Encoding streams the body."""
    declared, streamed = None, False
    for name, value in headers:
        if name == b"content-length":
            declared = value
        elif name == b"transfer-encoding":
            streamed = True
    return declared, streamed


async def _discard(receive: Receive) -> None:
    """Read and drop the rest of a body, up to `_DRAIN_AT_MOST` bytes."""
    read = 0
    while read <= _DRAIN_AT_MOST:
        message = await receive()
        read += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope["headers"])
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            # Read what was sent (within reason) so the client gets to read the answer:
            # closing on unread bytes resets the connection under its feet.
            if declared.isdigit() and int(declared) <= _DRAIN_AT_MOST:
                await _discard(receive)
            await self._refuse(send)
            return
        if chunked:
            await self._counted(scope, receive, send)
        else:
            # No more bytes than declared reach the app (none without a length): nothing
            # to count, and no wrappers on the way of most requests.
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body of undeclared length: cut off as soon as it passes the limit."""
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    # The app sees the client go away; the 413 goes out below.
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the app's answer to a cut-off body is not the one to send
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)
        if refused and not started:
            await _discard(receive)
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "code": "PAYLOAD_TOO_LARGE",
                "message": f"the request body is over {self.max_bytes} bytes",
                "details": {"max_bytes": self.max_bytes},
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": _TOO_LARGE, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class DashboardHeaders:
    """Security headers on the dashboard's pages and files (`/` and `/static/`)."""

    def __init__(self, app: ASGIApp, connect_to: list[str]) -> None:
        self.app = app
        sources = " ".join(["'self'", *connect_to])
        self.headers = {
            "content-security-policy": (
                f"default-src 'self'; connect-src {sources}; img-src 'self' data:;"
                " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            ),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith("/static/")):
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, secured)
