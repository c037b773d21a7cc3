"""An open-loop writer in a process of its own: stock adjustments at a fixed rate.

Open loop: write i is due at start + i / rate whether or not earlier writes
have come back, as independent users would send them, so a slow server shows
up as a rate below the target and a growing delay, not as a politely slower
client. The writes go over bare keep-alive HTTP/1.1 connections spread over
the nodes: the load generator must cost far less than what it measures.
"""

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from tools.bench import BenchError, stats
from tools.bench.wsclients import cpu_seconds

DRAIN = 5.0  # seconds past the end for the writes in flight


@dataclass(frozen=True)
class Plan:
    urls: list[str]
    key: str
    skus: list[str]
    rate: float  # writes per second, over all nodes
    seconds: float
    connections: int  # over all nodes


class HttpConnection:
    """A bare keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "HttpConnection":
        parsed = urlsplit(url)
        return cls(*await asyncio.open_connection(parsed.hostname, parsed.port))

    async def post(self, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def write(plan: Plan) -> dict[str, Any]:
    connections = [
        await HttpConnection.open(plan.urls[i % len(plan.urls)]) for i in range(plan.connections)
    ]
    total = int(plan.rate * plan.seconds)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    statuses: Counter[int] = Counter()
    delays: list[float] = []  # due time to response: what a user of the write would wait
    finished: list[float] = []
    cpu_start, start = cpu_seconds(), time.monotonic() + 0.1
    hard_stop = start + plan.seconds + DRAIN
    auth = f"Authorization: Bearer {plan.key}\r\n"
    body = b'{"delta": 1, "reason": "restock"}'

    async def tick() -> None:
        for index in range(total):
            delay = start + index / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((index, start + index / plan.rate))
        for _ in connections:
            queue.put_nowait(None)

    async def work(connection: HttpConnection) -> None:
        while (item := await queue.get()) is not None:
            index, due = item
            if time.monotonic() > hard_stop:
                statuses[0] += 1  # never sent: the server fell too far behind
                continue
            sku = plan.skus[index % len(plan.skus)]
            try:
                status, _ = await connection.post(f"/products/{sku}/adjustments", body, auth)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = -1
            now = time.monotonic()
            statuses[status] += 1
            delays.append(now - due)
            finished.append(now)
            if status == -1:
                return

    try:
        await asyncio.gather(tick(), *(work(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    ok = statuses[200] + statuses[201]
    elapsed = max(plan.seconds, (max(finished) - start) if finished else 0.0)
    return {
        "target_rate": plan.rate,
        "scheduled": total,
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "achieved_rate": ok / elapsed if elapsed else 0.0,
        "elapsed": elapsed,
        "delay_quantiles": stats.quantiles(delays, stats.CDF_PERCENTS),
        "cpu": cpu_seconds() - cpu_start,
    }


def child_main(conn: Connection, plan: dict[str, Any]) -> None:
    try:
        result = asyncio.run(write(Plan(**plan)))
    except Exception as exc:  # reported to the parent, which fails the scenario with it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    conn.send(result)


async def run(plan: Plan) -> dict[str, Any]:
    """Write in a child process; its result, or BenchError."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=child_main, args=(theirs, asdict(plan)), daemon=True)
    child.start()
    theirs.close()
    within = plan.seconds + DRAIN + 30.0
    try:
        if not await asyncio.to_thread(ours.poll, within):
            raise BenchError(f"the writer did not finish within {within:.0f} s")
        result: dict[str, Any] = ours.recv()
    finally:
        await asyncio.to_thread(child.join, 5.0)
        if child.is_alive():
            child.kill()
            await asyncio.to_thread(child.join, 5.0)
        with contextlib.suppress(OSError):
            ours.close()
    if "error" in result:
        raise BenchError(f"the writer failed: {result['error']}")
    return result
