"""Readers of the events stream pass over, on an entry's plain hints and without
checking its seal, what they cannot want; whatever they act on is decided by the
sealed event, whatever the hints say.

An entry whose seal is wrong shows whether a reader checked it: unsealed, it is
counted `rejected`; passed over on its hints, it is not."""

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import cast

import pytest

from backend.documents import OrderEvent
from backend.embedded import EmbeddedRedis
from backend.events.runner import BATCH, Runner
from backend.events.stream import (
    ENTRY_FIELD,
    FOR_FIELD,
    HOOKS_FIELD,
    ORDER_FIELD,
    TYPE_FIELD,
    EventStream,
    Fields,
    Hints,
)
from backend.events.tail import Tail, TailStats
from backend.settings import Settings
from database import PostgresDatabase
from tests.events_kit import entries, runner, running
from tests.support import eventually, make_product, node_settings, run_node, until

FORGED = b'{"event_id":"x","sig":"' + b"0" * 64 + b'"}'  # shaped like a seal, and wrong


def event(kind: str, order_id: str | None = None, **extra: object) -> OrderEvent:
    made: OrderEvent = {
        "event_id": str(uuid.uuid4()),
        "seq": 1,
        "type": kind,
        "order_id": order_id if order_id is not None else str(uuid.uuid4()),
        "sku": None,
        "at": "2026-11-22T10:00:00+00:00",
        "node": "node-a",
        "body": {},
    }
    return cast(OrderEvent, {**made, **extra})


def unhinted(stream: EventStream, made: OrderEvent) -> Fields:
    """The entry as a node from before the hints wrote it: the sealed event alone."""
    return {ENTRY_FIELD: stream.encode(made)[ENTRY_FIELD]}


def forged(kind: str, order_id: str | None = None) -> Fields:
    """Hints with a seal that does not hold."""
    fields: Fields = {ENTRY_FIELD: FORGED, TYPE_FIELD: kind}
    if order_id is not None:
        fields[ORDER_FIELD] = order_id
    return fields


async def add(stream: EventStream, *entries: Fields) -> None:
    for fields in entries:
        await stream.redis.xadd(stream.name, fields)


@dataclass
class Takes:
    """A consumer of the types it is given, noting the event ids it handles."""

    types: frozenset[str]
    name: str = "test-takes"
    handled: list[str] = field(default_factory=list)

    def might_want(self, hints: Hints) -> bool:
        return hints.type in self.types

    def wants(self, event: OrderEvent) -> bool:
        return self.might_want(Hints.of(event))

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        self.handled.append(event["event_id"])


@pytest.fixture
def settings(database_url: str) -> Settings:
    return node_settings(database_url, worker_claim_idle_seconds=5.0)


async def settled(worker: Runner, stream: EventStream) -> None:
    """Until the group has been handed every entry on the stream and acked each."""
    (newest, _), *_ = cast(
        list[tuple[bytes, object]], await stream.redis.xrevrange(stream.name, count=1)
    )

    async def done() -> bool:
        groups = await stream.redis.xinfo_groups(stream.name)
        (group,) = [g for g in groups if g["name"] == worker.group.encode()]
        return bool(group["last-delivered-id"] == newest and group["pending"] == 0)

    await until(done, 10, f"{worker.group} was handed every entry and acked it")


async def test_a_consumer_is_not_handed_nor_unseals_what_its_hints_rule_out_yet_acks_it(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    receipts = Takes(frozenset({"order.confirmed"}))
    worker = runner(receipts, stream, db, settings)
    confirmed = event("order.confirmed")
    async with running(worker):
        await stream.add([event("order.placed"), event("order.placed")])
        await add(stream, forged("order.placed"), forged("stock.low"))
        await stream.add([confirmed])
        await settled(worker, stream)
    assert receipts.handled == [confirmed["event_id"]]
    assert (worker.stats.skipped, worker.stats.rejected, worker.stats.ok) == (4, 0, 1)


async def test_a_forged_hint_cannot_make_a_consumer_act(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    payments = Takes(frozenset({"order.placed"}))
    worker = runner(payments, stream, db, settings)
    cancelled = event("order.cancelled")
    posing = stream.encode(cancelled) | {TYPE_FIELD: b"order.placed"}  # its seal holds
    placed = event("order.placed")
    async with running(worker):
        await add(stream, posing, forged("order.placed"))
        await stream.add([placed])
        await settled(worker, stream)
    assert payments.handled == [placed["event_id"]]  # the sealed event decided
    assert (worker.stats.skipped, worker.stats.rejected, worker.stats.ok) == (0, 1, 1)


async def test_entries_without_hints_and_replays_are_decided_as_before(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    payments = Takes(frozenset({"order.placed"}))
    worker = runner(payments, stream, db, settings)
    old, other, again = event("order.placed"), event("order.placed"), event("order.placed")
    async with running(worker):
        await add(
            stream,
            unhinted(stream, old),
            unhinted(stream, event("order.confirmed")),
            {ENTRY_FIELD: FORGED},
            stream.encode(other, "test-another-group"),
            stream.encode(again, payments.name),
        )
        await settled(worker, stream)  # the replay for another group is acked unread
    assert payments.handled == [old["event_id"], again["event_id"]]
    assert worker.stats.rejected == 1


async def test_reads_grow_while_entries_are_skipped_and_stay_small_for_slow_handlers(
    db: PostgresDatabase, stream: EventStream, database_url: str
) -> None:
    settings = node_settings(database_url, worker_claim_idle_seconds=0.4)
    slow = Slow(frozenset({"order.placed"}), name="test-slow")
    skipping = runner(Takes(frozenset()), stream, db, settings)
    handling = runner(slow, stream, db, settings)
    async with running(skipping):
        await stream.add([event("order.placed") for _ in range(600)])
        await settled(skipping, stream)
    assert skipping.stats.skipped == 600
    assert skipping.batch > 4 * BATCH  # the last reads took far more than the fewest
    async with running(handling):  # a new group: what is added from now on
        await stream.add([event("order.placed") for _ in range(2 * BATCH)])
        await settled(handling, stream)
    assert len(slow.handled) == 2 * BATCH
    assert handling.batch == BATCH  # 20 ms each: a round of 0.1 s holds 5


@dataclass
class Slow(Takes):
    """Takes 20 ms over each event, as a handler that calls out."""

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        await asyncio.sleep(0.02)
        await super().handle(event, attempt)


async def test_an_entry_carries_the_events_hints_beside_its_seal(stream: EventStream) -> None:
    order_id = str(uuid.uuid4())
    placed = event("order.placed", order_id, webhooks=False)
    low = event("stock.low", webhooks=True) | {"order_id": None}
    old = event("order.placed")  # from the outbox before the relay marked events
    await stream.add([placed, low, old])
    await add(stream, unhinted(stream, placed))
    read = await entries(stream)
    hints = [Hints.read(fields) for _, fields in read]
    assert hints == [
        Hints("order.placed", order_id, False),
        Hints("stock.low", None, True),
        Hints("order.placed", old["order_id"], None),
        None,
    ]
    assert [stream.decode(fields) for _, fields in read] == [placed, low, old, placed]
    assert not any(FOR_FIELD in fields or HOOKS_FIELD in fields for _, fields in read[2:])


async def test_the_tail_delivers_followed_orders_and_passes_over_the_rest_unsealed(
    stream: EventStream,
) -> None:
    followed, other = str(uuid.uuid4()), str(uuid.uuid4())
    delivered: list[OrderEvent] = []
    tail = Tail(stream, delivered.append, {followed}.__contains__)
    reading = asyncio.create_task(tail.run(lambda: None))
    try:
        await positioned(stream, tail)
        first, second = event("order.placed", followed), event("order.confirmed", followed)
        await stream.add([first])
        await add(
            stream,
            forged("order.placed", other),  # nobody here follows it
            forged("stock.low"),  # of no order
            unhinted(stream, event("order.placed", other)),
            unhinted(stream, second),
            stream.encode(first, "payments"),  # a replay: it went out when first added
        )
        await eventually(lambda: len(delivered) >= 2, 10, "the followed order's events")
        await eventually(lambda: tail.stats.read == 3, 10, "the unhinted entries unsealed")
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    assert [e["event_id"] for e in delivered] == [first["event_id"], second["event_id"]]
    assert tail.stats.rejected == 0  # the forged entries were never unsealed


async def positioned(stream: EventStream, tail: Tail) -> None:
    """Until the tail, which starts at the stream's end, has read an entry: from then
    on it reads everything added."""
    marker = stream.encode(event("stock.low") | {"order_id": None})
    for _ in range(200):
        await add(stream, marker)
        if tail.stats.skipped or tail.stats.read:
            tail.stats = TailStats()
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the tail did not start reading")


async def test_a_plain_order_is_acked_by_every_group_on_its_hints(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis
) -> None:
    """No payment provider that charges, no webhook endpoint, no receipt for a placed
    order: none of the three groups unseals its `order.placed`."""
    product = await make_product(db, on_hand=100)
    settings = node_settings(
        database_url,
        redis_url=redis_server.url,
        channel_prefix=f"t{uuid.uuid4().hex[:8]}:",
        workers="payments,notifications,webhooks",
        relay_interval_seconds=0.05,
    )
    async with run_node(settings) as node:
        line = {"items": [{"sku": product["sku"], "quantity": 1}]}
        assert (await node.client.post("/orders", json=line)).status_code == 201
        runners: list[Runner] = node.app.state.node.events.runners
        assert sorted(r.group for r in runners) == ["notifications", "payments", "webhooks"]
        await eventually(lambda: all(r.stats.skipped == 1 for r in runners), 10, "skipped")
    assert all((r.stats.ok, r.stats.rejected) == (0, 0) for r in runners)
