"""What a WebSocket client makes of the node's frames."""

from database import Json


def unbatched(message: Json) -> list[Json]:
    """A frame's messages: a `batch`'s, in order, or the one it is."""
    messages: list[Json] = message["messages"] if message["type"] == "batch" else [message]
    return messages
