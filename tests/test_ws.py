"""/ws on a real node: hostile input is answered quietly, slow clients slow nobody,
a stalled client is let go, and a shutdown sends every client elsewhere."""

import asyncio
import base64
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from backend.bus import CHANNEL
from backend.embedded import EmbeddedRedis
from backend.hub import MAX_CONTROL
from backend.routers.live import BURST, MAX_MESSAGE_CHARS
from database import Json
from tests.frames import unbatched
from tests.support import Node, eventually, node_settings, run_node, sealed, synthetic

NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start_node(database_url: str, redis_server: EmbeddedRedis) -> AsyncIterator[NodeFactory]:
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Node:
            settings = node_settings(database_url, redis_url=redis_server.url, **overrides)
            return await stack.enter_async_context(run_node(settings))

        yield start


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a client sends, the node logs no error and no traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


async def next_message(ws: ClientConnection, kind: str) -> Json:
    async with asyncio.timeout(5):
        while True:
            message: Json = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def closed(ws: ClientConnection) -> tuple[list[Json], int | None]:
    """What the server still sends, until it closes; and its close code (1006: none)."""
    messages: list[Json] = []
    async with asyncio.timeout(10):
        try:
            while True:
                messages.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            pass
    return messages, ws.close_code


def codes(messages: list[Json]) -> list[str]:
    return [m["code"] for m in messages if m["type"] == "error"]


async def create_products(node: Node, skus: list[str]) -> dict[str, Json]:
    products = {}
    for sku in skus:
        body = {"sku": sku, "name": sku, "price_cents": 100, "on_hand": 100}
        response = await node.client.post("/products", json=body)
        assert response.status_code == 201, response.text
        products[sku] = response.json()
    return products


def bus_message(product: Json, version: int, padding: int = 0) -> str:
    """A sealed bus message for `product` at `version`, padded to fill socket buffers."""
    return sealed(synthetic(product, version, "x" * padding))


async def publish(url: str, messages: list[str]) -> None:
    async with redis.Redis.from_url(url) as client, client.pipeline(transaction=False) as pipe:
        for message in messages:
            pipe.publish(CHANNEL, message)
        await pipe.execute()


async def read_until(ws: ClientConnection, latest: dict[str, int]) -> None:
    """Read until every SKU in `latest` has reached its version."""
    seen: dict[str, int] = {}
    async with asyncio.timeout(30):
        while any(seen.get(sku) != version for sku, version in latest.items()):
            for message in unbatched(json.loads(await ws.recv())):
                if message["type"] == "stock":
                    seen[message["sku"]] = message["version"]
                elif message["type"] == "snapshot":
                    seen |= {p["sku"]: p["version"] for p in message["products"]}


async def test_a_binary_frame_gets_an_error_and_a_1003_close(
    start_node: NodeFactory, quiet: None
) -> None:
    node = await start_node()
    for _ in range(3):
        async with connect(node.ws_url) as ws:
            await next_message(ws, "snapshot")
            await ws.send(b"\x00\x01binary")
            messages, code = await closed(ws)
            assert (codes(messages), code) == (["UNSUPPORTED_DATA"], 1003)
    await eventually(lambda: not node.state["hub"].mailboxes, 5, "every client gone")


async def test_bad_messages_get_an_error_and_the_connection_stays(
    start_node: NodeFactory, quiet: None
) -> None:
    node = await start_node()
    bad = [
        "not json",
        "[1]",
        "null",
        '"text"',
        "[" * 100_000,  # nested past the decoder's recursion limit
        '{"type": "dance"}',
        '{"no": "type"}',
        '{"type": "subscribe", "skus": 5}',
        '{"type": "subscribe", "skus": [1, 2]}',
        json.dumps({"type": "subscribe", "skus": ["x" * 65]}),
        json.dumps({"type": "subscribe", "skus": ["A"] * 1001}),
        '{"type": "follow", "order_id": "nonsense"}',
        '{"type": "follow", "order_id": ["a list"]}',
        '{"type": "unfollow"}',
    ]
    async with connect(node.ws_url) as ws:
        await next_message(ws, "snapshot")
        for text in bad:
            await ws.send(text)
            assert (await next_message(ws, "error"))["code"] == "INVALID_INPUT", text
        await ws.send(json.dumps({"type": "ping"}))
        await next_message(ws, "pong")


async def test_an_oversized_message_gets_an_error_and_a_1009_close(
    start_node: NodeFactory, quiet: None
) -> None:
    node = await start_node()
    async with connect(node.ws_url) as ws:
        await next_message(ws, "snapshot")
        await ws.send(json.dumps({"type": "ping", "pad": "x" * MAX_MESSAGE_CHARS}))
        messages, code = await closed(ws)
    assert (codes(messages), code) == (["MESSAGE_TOO_BIG"], 1009)


async def test_a_flood_of_messages_is_cut_off_with_1008(
    start_node: NodeFactory, quiet: None
) -> None:
    node = await start_node()
    async with connect(node.ws_url) as ws:
        await next_message(ws, "snapshot")
        ping = json.dumps({"type": "ping"})
        for _ in range(BURST * 5):  # far more than the refill could cover while it sends
            try:
                await ws.send(ping)
            except ConnectionClosed:
                break
        messages, code = await closed(ws)
    assert (codes(messages), code) == (["TOO_MANY_MESSAGES"], 1008)
    assert sum(m["type"] == "pong" for m in messages) <= MAX_CONTROL


async def test_an_address_past_its_share_of_connections_is_refused_with_429(
    start_node: NodeFactory,
) -> None:
    node = await start_node(ws_max_per_address=2)
    hub = node.state["hub"]
    async with connect(node.ws_url) as first, connect(node.ws_url):
        with pytest.raises(InvalidStatus) as refused:
            await connect(node.ws_url)
        response = refused.value.response
        assert response.status_code == 429
        assert json.loads(response.body or b"")["code"] == "TOO_MANY_CONNECTIONS"
        await first.close()
        await eventually(lambda: len(hub.mailboxes) == 1, 5, "the first client gone")
        async with connect(node.ws_url) as again:
            await next_message(again, "snapshot")


async def test_hundreds_of_clients_that_never_read_slow_nobody(
    start_node: NodeFactory, redis_server: EmbeddedRedis
) -> None:
    node = await start_node(ws_max_per_address=1000, ws_heartbeat_seconds=600)
    hub = node.state["hub"]
    skus = [f"CALM-{i}" for i in range(10)]
    products = await create_products(node, [*skus, "HEAVY"])
    base = node.ws_url

    async with (
        # 300 clients that never read: most on the calm SKUs, three on one SKU whose
        # changes are big enough to fill their sockets: those are truly stuck.
        silent_clients([f"{base}?skus={','.join(skus)}"] * 297),
        stuck_clients([f"{base}?skus=HEAVY"] * 3),
        connect(base, max_size=None) as fast,
    ):
        await next_message(fast, "snapshot")
        await eventually(lambda: len(hub.mailboxes) == 301, 10, "every client joined")
        *silent, fast_box = list(hub.mailboxes)
        calm, stuck = silent[:297], silent[297:]
        assert all(box.skus == frozenset({"HEAVY"}) for box in stuck)

        rounds = 30
        messages = [
            bus_message(products[sku], version) for version in range(2, rounds + 2) for sku in skus
        ]
        await publish(redis_server.url, messages)
        await read_until(fast, dict.fromkeys(skus, rounds + 1))
        for version in range(2, 42):  # one burst each: the stuck fall behind, and coalesce
            await publish(redis_server.url, [bus_message(products["HEAVY"], version, 200_000)])
            await read_until(fast, {"HEAVY": version})

        assert sum(box.coalesced for box in stuck) > 0
        await eventually(
            lambda: all(box.pending == 0 for box in calm), 10, "the calm clients drained"
        )
        assert all(box.pending <= 1 for box in stuck)  # the latest big change at most
        assert fast_box.pending == 0
        assert len(hub.mailboxes) == 301


@asynccontextmanager
async def silent_clients(urls: list[str]) -> AsyncIterator[list[ClientConnection]]:
    """Clients opened at once that never read; closed at once, not one by one."""
    clients = await asyncio.gather(*(connect(url, max_queue=1, close_timeout=1) for url in urls))
    try:
        yield clients
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))


@asynccontextmanager
async def stuck_clients(urls: list[str]) -> AsyncIterator[None]:
    """Clients that shake hands and never read a byte more, with a small receive buffer
    (which the kernel then does not grow): the node's side of each fills after a few MB.
    A client library would go on reading into its own memory."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def one(url: str) -> None:
        sock = socket.socket()
        socks.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        parts = urlsplit(url)
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)  # not a byte past the handshake
        assert head.startswith(b"HTTP/1.1 101"), head

    try:
        await asyncio.gather(*(one(url) for url in urls))
        yield
    finally:
        for sock in socks:
            sock.close()


async def test_a_client_whose_socket_takes_nothing_is_let_go(
    start_node: NodeFactory, redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    node = await start_node(ws_heartbeat_seconds=0.2)
    hub = node.state["hub"]
    products = await create_products(node, ["HEAVY"])
    caplog.set_level(logging.INFO, "backend.routers.live")

    async with (
        stuck_clients([f"{node.ws_url}?skus=HEAVY"]),
        connect(node.ws_url, max_size=None) as fast,
    ):
        await next_message(fast, "snapshot")
        await eventually(lambda: len(hub.mailboxes) == 2, 5, "both joined")
        stuck = next(iter(hub.mailboxes))
        await publish(
            redis_server.url, [bus_message(products["HEAVY"], v, 200_000) for v in range(2, 42)]
        )
        await read_until(fast, {"HEAVY": 41})

        await eventually(lambda: stuck not in hub.mailboxes, 10, "the stuck client let go")
        assert len(hub.mailboxes) == 1
        fast_box = next(iter(hub.mailboxes))
        await next_message(fast, "ping")  # the reader still hears from the node
        assert fast_box in hub.mailboxes
    assert any("took nothing for too long" in r.getMessage() for r in caplog.records)


async def test_shutdown_sends_every_client_a_reconnect_then_1012_and_refuses_newcomers(
    start_node: NodeFactory, quiet: None
) -> None:
    node = await start_node()
    hub = node.state["hub"]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(node.ws_url)) for _ in range(3)]
        for ws in clients:
            await next_message(ws, "snapshot")

        shutdown = asyncio.create_task(hub.shutdown(5))
        for ws in clients:
            messages, code = await closed(ws)
            assert (messages, code) == ([{"type": "reconnect", "reason": "shutdown"}], 1012)
        async with asyncio.timeout(5):
            await shutdown
        assert not hub.mailboxes

        async with connect(node.ws_url) as late:
            messages, code = await closed(late)
        assert (messages, code) == ([{"type": "reconnect", "reason": "shutdown"}], 1012)
