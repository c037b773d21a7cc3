"""An order's lifecycle, live over the WebSocket: each event off the stream reaches
the clients that follow the order, on any node, and nobody else.

The relay lease is held by the test while the order is placed and followed, so
that even `order.placed` is relayed only once the follower listens: the test
then lets the lease go, and the node relays everything at once.
"""

import asyncio
import json
import uuid
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from backend.embedded import EmbeddedRedis
from backend.embedded.smtp import MailSink
from database import Json, PostgresDatabase
from tests.events_kit import hold_the_relay, let_the_relay_go
from tests.frames import unbatched
from tests.mail import mail_sink
from tests.support import ADMIN_TOKEN, bearer, make_product, node_settings, run_node, token

LIFECYCLE = ["order.placed", "payment.succeeded", "order.confirmed", "notification.sent"]


def same_instant(event: Json) -> Json:
    """The event with its time parsed: `+00:00` and `Z` name the same instant."""
    return {**event, "at": datetime.fromisoformat(event["at"])}


async def send(ws: ClientConnection, **message: object) -> None:
    await ws.send(json.dumps(message))


async def until(ws: ClientConnection, kind: str, seen: list[Json] | None = None) -> Json:
    """The next message of `kind`; every message read on the way goes to `seen`."""
    async with asyncio.timeout(20):
        while True:
            for message in unbatched(json.loads(await ws.recv())):
                if seen is not None:
                    seen.append(message)
                if message["type"] == kind:
                    return message


async def order_events(ws: ClientConnection, count: int) -> list[Json]:
    seen: list[Json] = []
    events: list[Json] = []
    while len(events) < count:
        events.append((await until(ws, "order_event", seen))["event"])
    return events


async def everything_so_far(ws: ClientConnection) -> list[Json]:
    """What the node sent this client before it answers a ping now."""
    seen: list[Json] = []
    await send(ws, type="ping")
    await until(ws, "pong", seen)
    return seen


async def test_a_follower_sees_the_order_paid_confirmed_and_mailed_live(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    product = await make_product(db, on_hand=10, price_cents=1000)
    with mail_sink(tmp_path / "mail") as sink:
        await follow_the_lifecycle(database_url, db, redis_server, sink, tmp_path, product["sku"])


async def follow_the_lifecycle(
    database_url: str,
    db: PostgresDatabase,
    redis_server: EmbeddedRedis,
    sink: MailSink,
    tmp_path: Path,
    sku: str,
) -> None:
    common = {
        "redis_url": redis_server.url,
        "channel_prefix": f"t{uuid.uuid4().hex[:8]}:",  # a stream of this test's own
        "payment_provider": "simulated",
        "payment_delay_seconds": 0.05,
        "worker_retry_base_seconds": 0.05,
        "relay_interval_seconds": 0.05,
        "smtp_url": sink.url,
        "receipts_dir": str(tmp_path / "receipts"),
    }
    working = node_settings(database_url, "node-1", workers="payments,notifications", **common)
    watching = node_settings(database_url, "node-2", workers="", **common)
    await hold_the_relay(db)
    async with run_node(working) as node_1, run_node(watching) as node_2:
        placed = await node_1.client.post(
            "/orders",
            json={"items": [{"sku": sku, "quantity": 2}], "payment_method": "test_ok"},
            headers=bearer(token("cust-live")),
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]
        async with (
            connect(f"{node_2.ws_url}?access_token={token('cust-live')}") as follower,
            connect(f"{node_2.ws_url}?access_token={ADMIN_TOKEN}") as bystander,
            connect(f"{node_1.ws_url}?access_token={token('cust-other')}") as stranger,
        ):
            for ws in (follower, bystander, stranger):
                await until(ws, "snapshot")
            await send(follower, type="follow", order_id=order_id)
            assert (await until(follower, "order"))["order"]["id"] == order_id
            await send(stranger, type="follow", order_id=order_id)
            assert (await until(stranger, "error"))["code"] == "NOT_FOUND"

            await let_the_relay_go(database_url)
            events = await order_events(follower, len(LIFECYCLE))
            assert [event["type"] for event in events] == LIFECYCLE
            assert {event["order_id"] for event in events} == {order_id}
            timeline = await node_2.client.get(
                f"/orders/{order_id}/events", headers=bearer(token("cust-live"))
            )
            assert [same_instant(e) for e in events] == [
                same_instant(e) for e in timeline.json()["items"]
            ]  # the timeline's shape: what the dashboard loads, the socket adds to
            assert events[0]["node"] == "node-1"

            for ws in (bystander, stranger):
                heard = await everything_so_far(ws)
                assert [m for m in heard if m["type"] in ("order_event", "order")] == []
