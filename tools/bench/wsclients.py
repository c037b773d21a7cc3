"""Many WebSocket clients in processes of their own, each recording what it receives.

The clients are asyncio protocols over `frames`, a few microseconds per frame,
so that hundreds of them in two processes cost less than the node feeding
them. Each records every change it receives (its ledger seq and the wall-clock
time it arrived; the bench pairs it with the commit's time from Postgres) and
the newest version it learned per SKU, from changes and snapshots alike. A
`batch` message is unpacked into the messages it carries.

The parent drives the processes over pipes: status, reset, collect, close.
"""

import asyncio
import contextlib
import json
import multiprocessing
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from tools.bench import BenchError, frames

CONNECTS_AT_ONCE = 50  # handshakes in flight per process


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Record:
    url: str
    seqs: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    received: array = field(default_factory=lambda: array("d"))  # type: ignore[type-arg]
    first: float | None = None
    last: float | None = None
    latest: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0

    def change(self, message: dict[str, Any], now: float) -> None:
        seq = message.get("seq")
        if isinstance(seq, int):
            self.seqs.append(seq)
            self.received.append(now)
        self.learn(message)
        if self.first is None:
            self.first = now
        self.last = now

    def learn(self, product: dict[str, Any]) -> None:
        sku, version = product.get("sku"), product.get("version")
        if isinstance(sku, str) and isinstance(version, int) and version > self.latest.get(sku, 0):
            self.latest[sku] = version

    def reset(self) -> None:
        self.seqs, self.received = array("q"), array("d")
        self.first = self.last = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "seqs": self.seqs.tobytes(),
            "received": self.received.tobytes(),
            "first": self.first,
            "last": self.last,
            "latest": self.latest,
            "snapshots": self.snapshots,
        }


class Client(asyncio.Protocol):
    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.record = Record(url)
        self.reader = frames.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.upgraded = False
        self.closed = False
        self.error: str | None = None
        self.settled = asyncio.Event()  # upgraded, refused or closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(frames.handshake(f"{self.host}:{self.port}", self.path))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.settled.set()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.head[: self.head.find(b"\r\n")])
            if status.split(b" ")[1:2] != [b"101"]:
                self.fail(status.decode(errors="replace"))
                return
            data, self.upgraded = bytes(self.head[end + 4 :]), True
            self.settled.set()
        try:
            messages = self.reader.feed(data)
        except frames.FrameError as exc:
            self.fail(str(exc))
            return
        for opcode, payload in messages:
            self.on_frame(opcode, payload, now)

    def on_frame(self, opcode: int, payload: bytes, now: float) -> None:
        assert self.transport is not None
        if opcode == frames.TEXT:
            self.on_message(json.loads(payload), now)
        elif opcode == frames.PING:
            self.transport.write(frames.encode(frames.PONG, payload))
        elif opcode == frames.CLOSE:
            self.transport.write(frames.encode(frames.CLOSE, payload[:2]))
            self.transport.close()

    def on_message(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "stock":
            self.record.change(message, now)
        elif kind == "batch":
            for inner in message.get("messages", []):
                self.on_message(inner, now)
        elif kind == "snapshot":
            self.record.snapshots += 1
            for product in message.get("products", []):
                self.record.learn(product)

    def fail(self, reason: str) -> None:
        self.error = reason
        self.settled.set()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(RuntimeError):
                self.transport.write(frames.encode(frames.CLOSE, b"\x03\xe8"))
            self.transport.close()


async def _open(client: Client, gate: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    async with gate:
        try:
            async with asyncio.timeout(30):
                await loop.create_connection(lambda: client, client.host, client.port)
                await client.settled.wait()
        except (OSError, TimeoutError) as exc:
            client.error = f"{type(exc).__name__}: {exc}"


def _status(clients: list[Client]) -> dict[str, Any]:
    return {
        "connected": sum(c.upgraded and not c.closed for c in clients),
        "snapshots": sum(c.record.snapshots > 0 for c in clients),
        "failed": sum(c.error is not None for c in clients),
        "closed": sum(c.closed for c in clients),
        "changes": sum(len(c.record.seqs) for c in clients),
        "errors": sorted({c.error for c in clients if c.error})[:3],
        "cpu": cpu_seconds(),
    }


async def _serve(conn: Connection, urls: list[str], count: int, offset: int) -> None:
    clients = [Client(urls[(offset + i) % len(urls)]) for i in range(count)]
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    opening = asyncio.gather(*(_open(client, gate) for client in clients))
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_command() -> None:
        try:
            command = conn.recv()
        except EOFError:
            done.set()
            return
        reply: Any
        if command == "status":
            reply = _status(clients)
        elif command == "reset":
            for client in clients:
                client.record.reset()
            reply = _status(clients)
        elif command == "collect":
            reply = {"clients": [c.record.as_dict() for c in clients], "cpu": cpu_seconds()}
        else:
            for client in clients:
                client.close()
            reply = {"cpu": cpu_seconds()}
            done.set()
        conn.send(reply)

    loop.add_reader(conn.fileno(), on_command)
    try:
        await done.wait()
    finally:
        loop.remove_reader(conn.fileno())
        opening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opening


def child_main(conn: Connection, urls: list[str], count: int, offset: int) -> None:
    asyncio.run(_serve(conn, urls, count, offset))


@dataclass
class Collected:
    clients: list[dict[str, Any]]
    cpu: float  # seconds of CPU the processes used since the last reset


class ClientPool:
    """`count` clients over `processes` processes, client i on urls[i % len(urls)]."""

    def __init__(self, urls: list[str], count: int, processes: int = 2) -> None:
        self.urls, self.count = urls, count
        self.processes = max(1, min(processes, count))
        self._children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self._cpu_mark = 0.0

    async def start(self, within: float = 60.0) -> None:
        """Open every connection and wait for every client's first snapshot."""
        context = multiprocessing.get_context("spawn")
        share, extra = divmod(self.count, self.processes)
        offset = 0
        for index in range(self.processes):
            count = share + (index < extra)
            ours, theirs = context.Pipe()
            child = context.Process(
                target=child_main, args=(theirs, self.urls, count, offset), daemon=True
            )
            child.start()
            theirs.close()
            self._children.append((child, ours))
            offset += count
        deadline = time.monotonic() + within
        while True:
            status = await self.status()
            if status["failed"]:
                raise BenchError(f"{status['failed']} WebSocket clients failed: {status['errors']}")
            if status["snapshots"] == self.count:
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {status['snapshots']} of {self.count} WebSocket clients"
                    f" had their snapshot after {within:.0f} s"
                )
            await asyncio.sleep(0.2)
        await self.reset()

    async def _ask(self, command: str, within: float = 60.0) -> list[Any]:
        def ask(conn: Connection) -> Any:
            conn.send(command)
            if not conn.poll(within):
                raise BenchError(f"a client process did not answer {command!r}")
            return conn.recv()

        return list(
            await asyncio.gather(*(asyncio.to_thread(ask, conn) for _, conn in self._children))
        )

    async def status(self) -> dict[str, Any]:
        replies = await self._ask("status")
        total = {key: sum(r[key] for r in replies) for key in replies[0] if key != "errors"}
        total["errors"] = [e for r in replies for e in r["errors"]]
        return total

    async def reset(self) -> None:
        """Forget what was received so far; CPU is counted from here."""
        replies = await self._ask("reset")
        self._cpu_mark = sum(r["cpu"] for r in replies)

    async def collect(self) -> Collected:
        replies = await self._ask("collect")
        clients = [client for reply in replies for client in reply["clients"]]
        for client in clients:
            client["seqs"] = array("q", client["seqs"])
            client["received"] = array("d", client["received"])
        return Collected(clients, sum(r["cpu"] for r in replies) - self._cpu_mark)

    async def close(self) -> None:
        with contextlib.suppress(BenchError, OSError, EOFError):
            await self._ask("close", within=10.0)
        for child, conn in self._children:
            await asyncio.to_thread(child.join, 5.0)
            if child.is_alive():
                child.kill()
                await asyncio.to_thread(child.join, 5.0)
            conn.close()
        self._children = []

    async def __aenter__(self) -> "ClientPool":
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
