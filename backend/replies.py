"""What the layers that answer in front of the router share (`backend.reads`,
`backend.order_lane`): sending JSON bytes as the route would, and reading a
request's body ahead of the route while keeping it for the route.

A layer like that answers only the cases it can answer exactly as the route
would; for the rest the route must get the request as if nothing had touched
it, body included, so what was read is given back before anything new.
"""

from collections import deque
from collections.abc import Sequence

from starlette.types import Message, Receive, Send

_CONTENT_TYPE = (b"content-type", b"application/json")


async def send_json(send: Send, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    """JSON bytes with the headers FastAPI gives them, in its order (`Response` with
    `media_type="application/json"`, then the route's own). The list is new each
    time: the layers outside add their headers to it."""
    headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The whole body (None if the client left first) and the messages it came in."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def replaying(messages: Sequence[Message], receive: Receive) -> Receive:
    """`receive` as the route would have met it: the messages already read, then the
    rest (a disconnect, say) from the server."""
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay
