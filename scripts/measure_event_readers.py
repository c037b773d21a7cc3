"""Measure what the events stream's readers spend per entry, on a real Redis.

A plain order flow puts mostly `order.placed` (no payment method, no webhook
endpoint) on the stream, and every node's consumer groups and tail read every
entry. This times, per entry, over `--entries` such entries:

* `skip`: a group's `Runner._handle_all` (and its one XACK) with a consumer
  that cannot want them, as each of the three groups in that flow;
* `handle`: the same with a consumer that wants them and does nothing;
* `rounds`: `Runner._round` (XREADGROUP, handle, XACK) until the group has
  read them all, with the skipping consumer;
* `tail`: `Tail.read_once` until it has read them all, nobody following.

    .venv/bin/python scripts/measure_event_readers.py --entries 1000 --repeat 7

A measurement, not a test: on a shared machine its numbers move with the load.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.documents import OrderEvent
from backend.embedded import EmbeddedRedis, free_port
from backend.events.dead import DeadLetters
from backend.events.runner import Entry, Runner
from backend.events.stream import EventStream
from backend.events.tail import Tail
from backend.settings import Settings


def placed(seq: int) -> OrderEvent:
    return {
        "event_id": str(uuid.uuid4()),
        "seq": seq,
        "type": "order.placed",
        "order_id": str(uuid.uuid4()),
        "sku": None,
        "at": "2026-11-22T10:00:00.123456+00:00",
        "node": "node-1",
        "body": {"customer_id": None, "total_cents": 1999, "payment_method": None},
        "webhooks": False,
    }


class NoOp:
    """A consumer whose handler does nothing; `wanted` says which types it takes."""

    def __init__(self, name: str, wanted: frozenset[str]) -> None:
        self.name = name
        self.wanted = wanted
        self.handled = 0

    def might_want(self, hints: Any) -> bool:
        return bool(hints.type in self.wanted)

    def wants(self, event: OrderEvent) -> bool:
        return event["type"] in self.wanted

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        self.handled += 1


class Counting(Runner):
    """A runner that counts the entries it was handed, to know when it has read them all."""

    seen = 0

    async def _handle_all(self, entries: list[Entry], attempts: list[int]) -> None:
        self.seen += len(entries)
        await super()._handle_all(entries, attempts)


def runner(stream: EventStream, consumer: NoOp) -> Counting:
    settings = Settings(_env_file=None, node_id="measure")
    dead = DeadLetters(cast(Any, None), stream)  # never reached: nothing fails
    return Counting(cast(Any, consumer), stream, dead, "measure", settings, lambda *_: None)


async def timed(job: Callable[[], Awaitable[object]], repeat: int, per: int) -> float:
    """The median of `repeat` runs of `job`, in microseconds per `per` entries."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        await job()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) / per * 1e6


async def measure(url: str, count: int, repeat: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    stream = EventStream(client, b"k" * 32, prefix=f"m{uuid.uuid4().hex[:8]}:")
    figures: dict[str, float] = {}
    try:
        for name, wanted in (("skip", frozenset[str]()), ("handle", frozenset({"order.placed"}))):
            consumer = NoOp(name, wanted)
            worker = runner(stream, consumer)
            await worker.ensure_group()
            await stream.add([placed(i) for i in range(count)])
            reply = await client.xreadgroup(name, "measure", {stream.name: ">"}, count=count)
            entries = cast(list[tuple[bytes, list[Entry]]], reply)[0][1]

            async def handle_all(worker: Runner = worker, entries: list[Entry] = entries) -> None:
                await worker._handle_all(entries, [1] * len(entries))

            figures[name] = await timed(handle_all, repeat, count)

        async def rounds() -> None:
            consumer = NoOp(f"rounds-{uuid.uuid4().hex[:6]}", frozenset())
            worker = runner(stream, consumer)
            await worker.ensure_group()
            await client.xgroup_setid(stream.name, worker.group, "0")
            total = await client.xlen(stream.name)
            while worker.seen < total:
                await worker._round()

        figures["rounds"] = await timed(rounds, repeat, await client.xlen(stream.name))

        async def tail() -> None:
            reader = Tail(stream, lambda event: None, lambda order_id: False)
            reader._last = "0"
            while reader._last != last:
                await reader.read_once()

        newest = cast(list[tuple[bytes, object]], await client.xrevrange(stream.name, count=1))
        last = newest[0][0].decode()
        figures["tail"] = await timed(tail, repeat, await client.xlen(stream.name))
    finally:
        await client.delete(stream.name)
        await client.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orderflow-measure-") as folder:
        server = EmbeddedRedis(Path(folder), free_port())
        server.start()
        try:
            figures = asyncio.run(measure(server.url, args.entries, args.repeat))
        finally:
            server.stop()
    for name, micros in figures.items():
        print(f"{name:>7}: {micros:7.2f} µs per entry")


if __name__ == "__main__":
    main()
