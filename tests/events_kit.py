"""What the events tests share: a stream of their own, orders that write events, a
consumer whose effect is a real payment, and a runner run as a task."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import asyncpg
import redis.asyncio as redis

from backend.documents import OrderEvent
from backend.events.dead import DeadLetters
from backend.events.runner import Runner
from backend.events.stream import EventStream, Hints
from backend.settings import Settings
from database import PostgresDatabase
from tests.support import BUS_KEY, make_product

Fields = dict[bytes, bytes]


def stream_on(client: redis.Redis) -> EventStream:
    """A stream under a prefix of its own: tests share one Redis."""
    return EventStream(client, BUS_KEY.encode(), prefix=f"t{uuid.uuid4().hex[:12]}:")


async def place(db: PostgresDatabase, count: int, quantity: int = 1) -> list[str]:
    """`count` orders of one new product; their ids."""
    product = await make_product(db, on_hand=100)
    ids = []
    for _ in range(count):
        written = await db.place_order(
            [{"sku": product["sku"], "quantity": quantity}], None, None, "test", 600, 0, 10
        )
        ids.append(str(written["order"]["id"]))
    return ids


async def entries(stream: EventStream, key: str | None = None) -> list[tuple[bytes, Fields]]:
    """Every entry on the stream (or the one named `key`): id and fields."""
    return cast(list[tuple[bytes, Fields]], await stream.redis.xrange(key or stream.name))


async def on_stream(stream: EventStream, key: str | None = None) -> list[OrderEvent]:
    """Every event on the stream (or the one named `key`), in stream order."""
    events = [stream.decode(fields) for _, fields in await entries(stream, key)]
    assert all(event is not None for event in events)
    return [event for event in events if event is not None]


@dataclass
class Payments:
    """A consumer whose effect is `record_payment`: once per event, whoever delivers it.

    `failing` makes every attempt raise; `stall_after_effect` makes the handler
    pay and then never return, as a node that dies before its ack."""

    db: PostgresDatabase
    name: str = "test-payments"
    failing: bool = False
    stall_after_effect: bool = False
    attempts: list[tuple[str, int]] = field(default_factory=list)
    outcomes: list[bool] = field(default_factory=list)  # duplicate? per effect call

    def might_want(self, hints: Hints) -> bool:
        return hints.type == "order.placed"

    def wants(self, event: OrderEvent) -> bool:
        return self.might_want(Hints.of(event))

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        self.attempts.append((event["event_id"], attempt))
        if self.failing:
            raise RuntimeError("the provider is down")
        assert event["order_id"] is not None
        written = await self.db.record_payment(
            UUID(event["order_id"]), "succeeded", self.name, UUID(event["event_id"]), None, "t"
        )
        self.outcomes.append(bool(written.get("duplicate")))
        if self.stall_after_effect:
            await asyncio.Event().wait()


@dataclass
class Seen:
    """A consumer that only counts what it is given (another group on the same stream)."""

    name: str = "test-seen"
    events: list[str] = field(default_factory=list)

    def might_want(self, hints: Hints) -> bool:
        return True

    def wants(self, event: OrderEvent) -> bool:
        return True

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        self.events.append(event["event_id"])


def runner(
    consumer: Any,
    stream: EventStream,
    db: PostgresDatabase,
    settings: Settings,
    node_id: str = "node-a",
) -> Runner:
    return Runner(consumer, stream, DeadLetters(db, stream), node_id, settings, lambda *_: None)


@asynccontextmanager
async def running(*runners: Runner) -> AsyncIterator[list[asyncio.Task[None]]]:
    """The runners' loops as tasks until the block ends (a task cancelled early is a
    node killed mid-way)."""
    for each in runners:
        await each.ensure_group()  # before anything is added, as a node's relay does
    tasks = [asyncio.create_task(each.run(lambda: None)) for each in runners]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def hold_the_relay(db: PostgresDatabase) -> None:
    """No node relays until `let_the_relay_go`: the test holds the outbox's lease."""
    assert (await db.claim_outbox("test-holds-the-lease", 1, 600))["leased"]


async def let_the_relay_go(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("update public.relay_leases set expires_at = now() - interval '1s'")
    finally:
        await conn.close()
