"""`/ws` goes straight to its endpoint, past the HTTP-only layers.

A WebSocket stays open for hours, and each layer it passes through keeps a
coroutine frame (and what that frame holds) alive all that time: about 5 KB
per idle connection for the body limit, the dashboard headers, the error
handlers, the cached reads and the router, none of which does anything for a
socket. The lane sits just inside the request-id layer, so a socket's logs
still carry its id; the endpoint does its own access check (`routers.live`),
and the route stays declared for the OpenAPI document and the access policy.
"""

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket


class SocketLane:
    def __init__(
        self, app: ASGIApp, path: str, endpoint: Callable[[WebSocket], Awaitable[None]]
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            await self.endpoint(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)
