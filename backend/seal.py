"""Bus messages carry an HMAC of their bytes, so nodes believe only each other.

Anyone who can write to Redis could otherwise publish a change with a huge
version and `on_hand: 0`, and every node would show the product sold out. A
sealed message stays one JSON object: the seal is its last field, `"sig"`, an
HMAC-SHA256 (hex) of the object's text without that field, under the key the
nodes share (`BUS_KEY`). Opening checks the seal in constant time.

The seal covers every other field, whatever the message holds: a message with
a trace context (`"traceparent"`, from a node with tracing on) is sealed and
opened like one without, so neither kind of node needs to know the other.
"""

import hashlib
import hmac

_HEAD = b',"sig":"'
_TAIL = b'"}'
_HEX = 64
_SEALED = len(_HEAD) + _HEX + len(_TAIL)


def _mac(key: bytes, text: bytes) -> bytes:
    return hmac.new(key, text, hashlib.sha256).hexdigest().encode()


def seal(text: str, key: bytes) -> str:
    """`text`, a JSON object with at least one field, sealed with `key`."""
    raw = text.encode()
    return (raw[:-1] + _HEAD + _mac(key, raw) + _TAIL).decode()


def unseal(data: bytes, key: bytes) -> bytes | None:
    """The JSON text inside a sealed message, or None if the seal is missing or wrong."""
    if len(data) <= _SEALED or not data.endswith(_TAIL) or data[-_SEALED:][: len(_HEAD)] != _HEAD:
        return None
    text = data[:-_SEALED] + b"}"
    given = data[-_HEX - len(_TAIL) : -len(_TAIL)]
    return text if hmac.compare_digest(given, _mac(key, text)) else None
