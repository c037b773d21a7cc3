"""The relay on real Postgres and Redis: the outbox reaches the stream in order, one
relay at a time, and nothing is lost while Redis is away."""

from uuid import UUID

from backend.embedded import EmbeddedRedis, free_port
from backend.events.relay import Relay
from backend.events.stream import EventStream
from database import PostgresDatabase
from tests.events_kit import on_stream, place
from tests.proxy import forward
from tests.support import make_product, node_settings, run_node, until


def relay(
    db: PostgresDatabase, stream: EventStream, node_id: str, batch: int = 50, lease: int = 5
) -> Relay:
    return Relay(db, stream, node_id, interval=0.05, batch=batch, lease_seconds=lease)


async def test_the_outbox_reaches_the_stream_in_order_and_is_marked(
    db: PostgresDatabase, stream: EventStream
) -> None:
    orders = await place(db, 3)
    await db.cancel_order(UUID(orders[1]), "test")  # a second event for one order
    mover = relay(db, stream, "node-a", batch=2)
    while await mover.relay_once():  # full batches: more may wait
        pass
    events = await on_stream(stream)
    assert [e["type"] for e in events].count("order.placed") == 3
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    cancelled = [e["type"] for e in events if e["order_id"] == orders[1]]
    assert cancelled == ["order.placed", "order.cancelled"]
    assert mover.stats.relayed == len(events)
    assert (await db.lifecycle_stats())["outbox_pending"] == 0
    assert not await mover.relay_once()  # nothing left: nothing added again
    assert len(await on_stream(stream)) == len(events)


async def test_one_relay_holds_the_lease_and_another_takes_over_when_it_lapses(
    db: PostgresDatabase, stream: EventStream
) -> None:
    first = relay(db, stream, "node-a", lease=1)
    second = relay(db, stream, "node-b", lease=1)
    await place(db, 2)
    await first.relay_once()
    await place(db, 1)
    await second.relay_once()  # the lease is node-a's: node-b adds nothing
    assert (first.stats.holding, second.stats.holding) == (True, False)
    assert len(await on_stream(stream)) == 2

    async def taken_over() -> bool:  # node-a stopped renewing: its lease runs out
        await second.relay_once()
        return second.stats.holding

    await until(taken_over, 5, "node-b took the lease")
    assert [e["type"] for e in await on_stream(stream)] == ["order.placed"] * 3
    assert (await db.lifecycle_stats())["outbox_pending"] == 0


async def test_orders_placed_while_redis_is_away_reach_the_stream_once_it_returns(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis, stream: EventStream
) -> None:
    port = free_port()  # the node's Redis: a forwarder that is up, then down, then up
    settings = node_settings(
        database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        channel_prefix=stream.prefix,
        workers="",
        relay_interval_seconds=0.05,
    )
    product = await make_product(db, on_hand=100)
    line = {"items": [{"sku": product["sku"], "quantity": 1}]}
    async with run_node(settings) as node:
        async with forward(port, redis_server.port):
            before = (await node.client.post("/orders", json=line)).json()["id"]
            await until(lambda: outbox_empty(db), 10, "the first event was relayed")
        during = []
        for _ in range(3):
            response = await node.client.post("/orders", json=line)
            assert response.status_code == 201, response.text
            during.append(response.json()["id"])
        assert (await db.lifecycle_stats())["outbox_pending"] == 3
        async with forward(port, redis_server.port):
            await until(lambda: outbox_empty(db), 15, "the waiting events were relayed")
    placed = [e["order_id"] for e in await on_stream(stream)]
    assert placed == [before, *during]


async def outbox_empty(db: PostgresDatabase) -> bool:
    return bool((await db.lifecycle_stats())["outbox_pending"] == 0)
