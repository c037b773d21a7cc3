"""The events stream through a node: its wiring, the admin routes and /metrics."""

import uuid
from uuid import UUID

import httpx
import pytest

from backend.embedded import EmbeddedRedis
from backend.events.stream import FOR_FIELD, EventStream
from backend.node import Node
from database import PostgresDatabase
from tests.events_kit import entries, on_stream
from tests.support import bearer, make_product, node_settings, run_node, token, until


async def types_on_stream(stream: EventStream, order_id: str) -> list[str]:
    return [e["type"] for e in await on_stream(stream) if e["order_id"] == order_id]


async def outbox_empty(db: PostgresDatabase) -> bool:
    return bool((await db.lifecycle_stats())["outbox_pending"] == 0)


async def confirmed(client: httpx.AsyncClient, order_id: str) -> bool:
    return bool((await client.get(f"/orders/{order_id}")).json()["status"] == "confirmed")


async def test_a_node_relays_runs_its_workers_and_reports_them(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis, stream: EventStream
) -> None:
    settings = node_settings(
        database_url,
        redis_url=redis_server.url,
        channel_prefix=stream.prefix,
        workers="payments",
        payment_provider="simulated",
        payment_delay_seconds=0,
        relay_interval_seconds=0.05,
    )
    product = await make_product(db, on_hand=10)
    async with run_node(settings) as node:
        line = {"items": [{"sku": product["sku"], "quantity": 1}]}
        order = (await node.client.post("/orders", json=line)).json()
        await until(lambda: confirmed(node.client, order["id"]), 10, "paid by the worker")
        paid = ["order.placed", "payment.succeeded", "order.confirmed"]

        async def relayed() -> bool:
            return await types_on_stream(stream, order["id"]) == paid

        await until(relayed, 10, "the payment's events reached the stream, in order")
        status = (await node.client.get("/admin/lifecycle")).json()
        assert status["stream"] == stream.name
        assert status["stream_length"] >= 1
        (group,) = status["groups"]
        assert (group["name"], group["consumers"]) == ("payments", 1)
        metrics = (await node.client.get("/metrics")).text
        assert 'orderflow_worker_events_total{consumer="payments",outcome="ok"} 1.0' in metrics
        assert 'orderflow_worker_seconds_count{consumer="payments"} 1.0' in metrics
        for name in ("outbox_pending", "dead_letters", "stream_length", "events_relayed_total"):
            assert f"orderflow_{name} " in metrics, name
        assert 'orderflow_stream_lag{group="payments"}' in metrics
        assert 'orderflow_stream_pending{group="payments"}' in metrics
        customer = bearer(token(f"customer-{uuid.uuid4().hex[:8]}"))
        refused = await node.client.get("/admin/lifecycle", headers=customer)
        assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")


async def test_admins_list_and_replay_dead_letters(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis, stream: EventStream
) -> None:
    settings = node_settings(
        database_url, redis_url=redis_server.url, channel_prefix=stream.prefix, workers=""
    )
    product = await make_product(db)
    placed = await db.place_order(
        [{"sku": product["sku"], "quantity": 1}], None, None, "t", 60, 0, 9
    )
    (event,) = await db.order_timeline(UUID(str(placed["order"]["id"])))
    async with run_node(settings) as node:
        api = node.client
        await until(lambda: outbox_empty(db), 10, "the order's event was relayed")
        first = await db.add_dead_letter(
            "payments", UUID(event["event_id"]), "1-0", dict(event), "boom", 5
        )
        second = await db.add_dead_letter(
            "webhooks", UUID(event["event_id"]), "1-0", dict(event), "bang", 5
        )
        listed = (await api.get("/admin/dead-letters")).json()["items"]
        assert [(d["id"], d["consumer"], d["error"]) for d in listed] == [
            (first, "payments", "boom"),
            (second, "webhooks", "bang"),
        ]
        assert listed[0]["payload"]["event_id"] == event["event_id"]

        replayed = await api.post(f"/admin/dead-letters/{first}/replay")
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["items"] == [
            {"id": first, "consumer": "payments", "event_id": event["event_id"]}
        ]
        again = await api.post(f"/admin/dead-letters/{first}/replay")
        assert (again.status_code, again.json()["code"]) == (404, "NOT_FOUND")
        rest = (await api.post("/admin/dead-letters/replay")).json()["items"]
        assert [d["id"] for d in rest] == [second]
        assert (await api.post("/admin/dead-letters/replay")).json()["items"] == []

        assert (await api.get("/admin/dead-letters")).json()["items"] == []
        every = (await api.get("/admin/dead-letters?include_replayed=true")).json()["items"]
        assert all(d["replayed_at"] is not None for d in every)
        targets = [fields.get(FOR_FIELD) for _, fields in await entries(stream)]
        assert targets == [None, b"payments", b"webhooks"]  # relayed, then the replays
        relayed = [{k: v for k, v in e.items() if k != "webhooks"} for e in await on_stream(stream)]
        assert relayed == [event, event, event]  # the relay marks whether a webhook wants it
        status = (await api.get("/admin/lifecycle")).json()
        assert (status["dead_letters"], status["stream_length"]) == (0, 3)


async def test_without_redis_events_wait_in_the_outbox_and_replay_is_refused(
    database_url: str, db: PostgresDatabase
) -> None:
    product = await make_product(db)
    async with run_node(node_settings(database_url)) as node:
        line = {"items": [{"sku": product["sku"], "quantity": 1}]}
        assert (await node.client.post("/orders", json=line)).status_code == 201
        status = (await node.client.get("/admin/lifecycle")).json()
        assert status["outbox_pending"] == 1
        assert (status["stream"], status["groups"]) == (None, [])
        assert status["problem"] == "no Redis: events wait in the outbox"
        refused = await node.client.post("/admin/dead-letters/replay")
        assert (refused.status_code, refused.json()["code"]) == (409, "STREAM_OFF")
        metrics = (await node.client.get("/metrics")).text
        assert "orderflow_outbox_pending " in metrics


def test_a_node_refuses_to_start_with_an_unknown_consumer(database_url: str) -> None:
    settings = node_settings(database_url, workers="payments,paymnts")
    with pytest.raises(ValueError, match=r"WORKERS names unknown consumers \['paymnts'\]"):
        Node(settings, PostgresDatabase(database_url))
