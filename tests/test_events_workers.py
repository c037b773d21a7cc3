"""Consumer groups on real Postgres and Redis: every effect happens once, whatever the
stream does (duplicates, a consumer dying mid-message, failures and replays)."""

from uuid import UUID

import pytest

from backend.events.dead import DeadLetters
from backend.events.relay import Relay
from backend.events.stream import EventStream
from backend.settings import Settings
from database import PostgresDatabase
from tests.events_kit import Payments, Seen, on_stream, place, runner, running
from tests.support import eventually, node_settings, until


@pytest.fixture
def settings(database_url: str) -> Settings:
    return node_settings(
        database_url,
        worker_max_attempts=3,
        worker_retry_base_seconds=0.05,
        worker_claim_idle_seconds=0.5,
    )


async def relay_all(db: PostgresDatabase, stream: EventStream) -> None:
    await Relay(db, stream, "relay", interval=1, batch=100).relay_once()


async def paid_once(db: PostgresDatabase, order_id: str) -> bool:
    timeline = await db.order_timeline(UUID(order_id))
    return [e["type"] for e in timeline].count("payment.succeeded") == 1


async def test_the_same_event_delivered_twice_has_its_effect_once(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    payments = Payments(db)
    worker = runner(payments, stream, db, settings)
    async with running(worker):
        (order,) = await place(db, 1)
        await relay_all(db, stream)
        (event,) = await on_stream(stream)
        await stream.add([event])  # a relay that died before marking it adds it again
        await eventually(lambda: len(payments.outcomes) == 2, 10, "both deliveries handled")
    assert payments.outcomes == [False, True]  # the second was a duplicate
    assert await paid_once(db, order)
    assert (await db.get_order(UUID(order)))["status"] == "confirmed"


async def test_an_event_a_dead_consumer_left_unacked_is_taken_over_and_paid_once(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    dying = Payments(db, stall_after_effect=True)  # pays, then never acks
    survivor = Payments(db)
    async with running(runner(dying, stream, db, settings, "node-a")) as (task,):
        (order,) = await place(db, 1)
        await relay_all(db, stream)
        await eventually(lambda: len(dying.outcomes) == 1, 10, "node-a paid")
        task.cancel()  # node-a dies before its ack
    taker = runner(survivor, stream, db, settings, "node-b")
    async with running(taker):
        await eventually(lambda: len(survivor.outcomes) == 1, 10, "node-b took it over")
    assert survivor.attempts[0][1] == 2  # its second delivery
    assert survivor.outcomes == [True]  # node-a's payment stands: the effect is once
    assert taker.stats.taken_over == 1
    assert await paid_once(db, order)
    pending = await stream.redis.xpending(stream.name, survivor.name)
    assert pending["pending"] == 0


async def test_a_failing_event_is_retried_then_dead_lettered_and_replays_once_fixed(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    payments = Payments(db, failing=True)
    seen = Seen()
    worker = runner(payments, stream, db, settings)
    async with running(worker, runner(seen, stream, db, settings)):
        (order,) = await place(db, 1)
        await relay_all(db, stream)
        await eventually(lambda: worker.stats.dead == 1, 10, "a dead letter")
        assert [attempt for _, attempt in payments.attempts] == [1, 2, 3]
        assert worker.stats.retried == 2
        (letter,) = (await db.list_dead_letters(False, 10))["items"]
        assert (letter["consumer"], letter["attempts"]) == (payments.name, 3)
        assert letter["error"] == "RuntimeError: the provider is down"
        assert letter["payload"]["order_id"] == order
        assert await on_stream(stream, stream.dead) == [letter["payload"]]
        pending = await stream.redis.xpending(stream.name, payments.name)
        assert pending["pending"] == 0  # buried, so acked

        payments.failing = False  # the provider is back
        replayed = await DeadLetters(db, stream).replay(letter["id"])
        assert [r["id"] for r in replayed] == [letter["id"]]
        await until(lambda: paid_once(db, order), 10, "the replayed event was paid")
    assert (await db.list_dead_letters(False, 10))["items"] == []
    assert payments.outcomes == [False]
    assert len(seen.events) == 1  # the other group saw the replay and left it alone


async def test_a_new_group_starts_at_the_end_and_a_lost_group_from_the_start(
    db: PostgresDatabase, stream: EventStream, settings: Settings
) -> None:
    await place(db, 1)
    await relay_all(db, stream)  # before the group: history it does not act on
    seen = Seen()
    async with running(runner(seen, stream, db, settings)):
        await place(db, 1)
        await relay_all(db, stream)
        await eventually(lambda: len(seen.events) == 1, 10, "the new event")
        assert seen.events == [(await on_stream(stream))[1]["event_id"]]
        await stream.redis.delete(stream.name)  # Redis lost its data (no persistence)
        await place(db, 1)
        await relay_all(db, stream)  # a new stream without the group: it comes back at 0
        await eventually(lambda: len(seen.events) == 2, 10, "the group came back")
    assert seen.events[1] == (await on_stream(stream))[0]["event_id"]
