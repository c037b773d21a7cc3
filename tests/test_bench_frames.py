"""The bench's WebSocket client: frames as a server sends them, messages as a node sends them."""

import json
import struct

import pytest

from tools.bench import frames
from tools.bench.wsclients import Client


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return struct.pack("!BB", first, len(payload)) + payload
    if len(payload) < 1 << 16:
        return struct.pack("!BBH", first, 126, len(payload)) + payload
    return struct.pack("!BBQ", first, 127, len(payload)) + payload


def unmask(frame: bytes) -> tuple[int, bytes]:
    opcode, length = frame[0] & 0x0F, frame[1] & 0x7F
    assert frame[1] & 0x80, "a client frame is masked"
    offset = 2
    if length == 126:
        (length,), offset = struct.unpack_from("!H", frame, 2), 4
    elif length == 127:
        (length,), offset = struct.unpack_from("!Q", frame, 2), 10
    mask, body = frame[offset : offset + 4], frame[offset + 4 :]
    assert len(body) == length
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_is_read(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert frames.FrameReader().feed(server_frame(frames.TEXT, payload)) == [(frames.TEXT, payload)]


def test_bytes_may_arrive_one_at_a_time() -> None:
    data = server_frame(frames.TEXT, b"hello") + server_frame(frames.TEXT, b"x" * 300)
    reader = frames.FrameReader()
    got = [message for byte in data for message in reader.feed(bytes([byte]))]
    assert got == [(frames.TEXT, b"hello"), (frames.TEXT, b"x" * 300)]


def test_fragments_are_joined_and_a_ping_between_them_comes_first() -> None:
    data = (
        server_frame(frames.TEXT, b"he", fin=False)
        + server_frame(frames.PING, b"p")
        + server_frame(frames.CONTINUATION, b"ll", fin=False)
        + server_frame(frames.CONTINUATION, b"o")
    )
    assert frames.FrameReader().feed(data) == [(frames.PING, b"p"), (frames.TEXT, b"hello")]


def test_a_masked_server_frame_is_refused() -> None:
    with pytest.raises(frames.FrameError):
        frames.FrameReader().feed(b"\x81\x85" + b"\x00" * 9)


@pytest.mark.parametrize("size", [3, 200, 70000])
def test_client_frames_are_masked_and_round_trip(size: int) -> None:
    payload = b"a" * size
    assert unmask(frames.encode(frames.PONG, payload)) == (frames.PONG, payload)


def change(seq: int, sku: str, version: int) -> dict[str, object]:
    return {
        "type": "stock", "sku": sku, "version": version, "seq": seq,
        "committed_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip


def test_a_batch_counts_as_the_messages_it_carries() -> None:
    client = Client("ws://127.0.0.1:1/ws")
    now = 1767225600.25
    client.on_message({"type": "snapshot", "products": [{"sku": "A", "version": 1}]}, now)
    batch = {"type": "batch", "messages": [change(7, "A", 2), change(8, "B", 4)]}
    client.on_message(json.loads(json.dumps(batch)), now)
    client.on_message(change(9, "A", 3), now + 1)
    record = client.record
    assert list(record.seqs) == [7, 8, 9]
    assert list(record.received) == [now, now, now + 1]
    assert record.latest == {"A": 3, "B": 4}
    assert (record.first, record.last, record.snapshots) == (now, now + 1, 1)
