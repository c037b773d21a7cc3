"""The client side of RFC 6455 framing, only as much as a load generator needs.

A measuring client must cost far less than the server it measures: a full
client library spends more per frame than the server does to send it. This
reads unmasked server frames (with fragmentation and control frames between
fragments) and writes masked client frames; the handshake is in `wsclients`.
"""

import base64
import os
import struct
from dataclasses import dataclass, field

TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0
CLOSE, PING, PONG = 0x8, 0x9, 0xA
_CONTROL = (CLOSE, PING, PONG)


class FrameError(Exception):
    """The server sent something this reader refuses (a masked or oversized frame)."""


@dataclass
class FrameReader:
    """Feed bytes as they arrive; get back whole messages as (opcode, payload)."""

    max_size: int = 1 << 26
    _buffer: bytearray = field(default_factory=bytearray)
    _opcode: int | None = None  # of the fragmented message being gathered
    _parts: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        messages = []
        while (frame := self._next_frame()) is not None:
            fin, opcode, payload = frame
            if opcode in _CONTROL:
                messages.append((opcode, payload))
            elif opcode == CONTINUATION:
                if self._opcode is None:
                    raise FrameError("a continuation frame with no message to continue")
                self._parts.append(payload)
                if fin:
                    messages.append((self._opcode, b"".join(self._parts)))
                    self._opcode, self._parts = None, []
            elif fin:
                messages.append((opcode, payload))
            else:
                self._opcode, self._parts = opcode, [payload]
        return messages

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if second & 0x80:
            raise FrameError("a server frame must not be masked")
        length, offset = second & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,), offset = struct.unpack_from("!H", buffer, 2), 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,), offset = struct.unpack_from("!Q", buffer, 2), 10
        if length > self.max_size:
            raise FrameError(f"a frame of {length} bytes")
        if len(buffer) < offset + length:
            return None
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        return bool(first & 0x80), first & 0x0F, payload


def encode(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def handshake(host: str, path: str) -> bytes:
    """The HTTP/1.1 upgrade request, with no Origin (not a browser) and no extensions."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
