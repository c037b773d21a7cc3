"""Outgoing webhooks against a real receiver (an HTTP server in this process): the
admin API, signatures a receiver can check, retries until delivered, never twice."""

import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest

from backend.documents import OrderEvent
from backend.webhooks import signing
from backend.webhooks.consumer import DeliveryFailed, WebhookConsumer
from database import PostgresDatabase
from tests.hooks import receiver
from tests.support import Node, make_product, node_settings, run_node


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[Node]:
    settings = node_settings(database_url, webhook_allow_http=True, worker_max_attempts=3)
    async with run_node(settings) as running:
        yield running


@pytest.fixture
async def consumer(node: Node) -> AsyncIterator[WebhookConsumer]:
    made = WebhookConsumer(node.state["node"])
    yield made
    await made.aclose()


async def register(node: Node, url: str, *types: str) -> dict[str, Any]:
    response = await node.client.post(
        "/admin/webhooks", json={"url": url, "event_types": list(types), "description": "test"}
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


async def confirmed_event(db: PostgresDatabase) -> OrderEvent:
    product = await make_product(db, on_hand=5, price_cents=700)
    placed = await db.place_order(
        [{"sku": product["sku"], "quantity": 1}], "cust-hooks", None, "test", 900, 0, 100
    )
    order_id = placed["order"]["id"]
    await db.confirm_order(UUID(order_id), "test")
    claimed = await db.claim_outbox("test-relay", 1000, 30)
    events = [e for e in claimed["events"] if e["order_id"] == order_id]
    found: OrderEvent = next(e for e in events if e["type"] == "order.confirmed")
    return found


async def deliveries(node: Node, endpoint_id: str) -> list[dict[str, Any]]:
    response = await node.client.get(
        "/admin/webhooks/deliveries", params={"endpoint_id": endpoint_id}
    )
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_https_is_required_unless_allowed(database_url: str) -> None:
    async with run_node(node_settings(database_url)) as strict:
        body = {"url": "http://example.com/hook", "event_types": ["order.confirmed"]}
        refused = await strict.client.post("/admin/webhooks", json=body)
        assert (refused.status_code, refused.json()["code"]) == (422, "INVALID_INPUT")
        schema = (await strict.client.get("/openapi.json")).json()
        url = schema["components"]["schemas"]["WebhookCreate"]["properties"]["url"]
        assert url["pattern"] == "^https://[!-~]+$"
        made = await strict.client.post(
            "/admin/webhooks", json={**body, "url": "https://example.com/hook"}
        )
        assert made.status_code == 201
    async with run_node(node_settings(database_url, webhook_allow_http=True)) as relaxed:
        assert (await relaxed.client.post("/admin/webhooks", json=body)).status_code == 201


async def test_endpoints_are_listed_without_their_secret_and_disabled(node: Node) -> None:
    endpoint = await register(node, "https://example.com/a", "order.confirmed", "stock.low")
    assert len(endpoint["secret"]) >= 40
    assert endpoint["event_types"] == ["order.confirmed", "stock.low"]
    listed = (await node.client.get("/admin/webhooks")).json()["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]
    gone = await node.client.delete(f"/admin/webhooks/{endpoint['id']}")
    assert gone.status_code == 200
    assert gone.json()["disabled_at"] is not None
    missing = await node.client.delete(f"/admin/webhooks/{UUID(int=7)}")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    unknown = await node.client.post(
        "/admin/webhooks", json={"url": "https://example.com/b", "event_types": ["order.lost"]}
    )
    assert unknown.status_code == 422


async def test_a_delivery_is_signed_so_the_receiver_can_check_it(
    node: Node, db: PostgresDatabase, consumer: WebhookConsumer
) -> None:
    async with receiver() as hook:
        endpoint = await register(node, hook.url, "order.confirmed")
        event = await confirmed_event(db)
        await consumer.handle(event, 1)
    [delivery] = hook.received
    assert json.loads(delivery.body) == event
    headers = delivery.headers
    assert headers["orderflow-event"] == "order.confirmed"
    assert headers["content-type"] == "application/json"
    fields = dict(part.split("=", 1) for part in headers["orderflow-signature"].split(","))
    # What any receiver does, with nothing but the secret and the standard library:
    signed = f"{fields['t']}.".encode() + delivery.body
    expected = hmac.new(endpoint["secret"].encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    [row] = await deliveries(node, endpoint["id"])
    assert headers["orderflow-delivery"] == row["id"]
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 1, 200)
    assert row["event_id"] == event["event_id"]


def test_verify_accepts_a_fresh_signature_only() -> None:
    body = b'{"type":"order.confirmed"}'
    header = signing.signature("s3cret", body, now=1_700_000_000)
    assert signing.verify("s3cret", header, body, now=1_700_000_010)
    assert not signing.verify("other", header, body, now=1_700_000_010)
    assert not signing.verify("s3cret", header, body + b" ", now=1_700_000_010)
    assert not signing.verify("s3cret", header, body, now=1_700_000_000 + 301)  # replayed
    assert not signing.verify("s3cret", "v1=abc", body)


async def test_a_failing_endpoint_is_retried_until_delivered_and_then_never_again(
    node: Node, db: PostgresDatabase, consumer: WebhookConsumer
) -> None:
    async with receiver("/flaky") as flaky, receiver("/steady") as steady:
        flaky.answers = [500, 302]  # a redirect is not followed: not delivered either
        bad = await register(node, flaky.url, "order.confirmed")
        good = await register(node, steady.url, "order.confirmed")
        event = await confirmed_event(db)
        with pytest.raises(DeliveryFailed, match="answered 500"):
            await consumer.handle(event, 1)
        with pytest.raises(DeliveryFailed, match="answered 302"):
            await consumer.handle(event, 2)
        assert [row["status"] for row in await deliveries(node, bad["id"])] == ["pending"]
        await consumer.handle(event, 3)
        await consumer.handle(event, 1)  # redelivered later (a replay): nothing to send
    assert len(flaky.received) == 3
    assert len(steady.received) == 1  # delivered on the first attempt, not sent again
    delivery_ids = {d.headers["orderflow-delivery"] for d in flaky.received}
    assert len(delivery_ids) == 1  # a retry keeps its delivery id
    [row] = await deliveries(node, bad["id"])
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 3, 200)
    [first] = await deliveries(node, good["id"])
    assert (first["status"], first["attempts"]) == ("delivered", 1)


async def test_the_last_attempt_marks_the_delivery_dead(
    node: Node, db: PostgresDatabase, consumer: WebhookConsumer
) -> None:
    async with receiver() as hook:
        hook.answers = [503] * 10
        endpoint = await register(node, hook.url, "order.confirmed")
        event = await confirmed_event(db)
        for attempt in (1, 2, 3):  # WORKER_MAX_ATTEMPTS is 3 on this node
            with pytest.raises(DeliveryFailed):
                await consumer.handle(event, attempt)
        await consumer.handle(event, 1)  # dead is final: not sent again
    assert len(hook.received) == 3
    [row] = await deliveries(node, endpoint["id"])
    assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 3, "answered 503")


async def test_replaying_a_dead_letter_owes_its_dead_deliveries_again(
    node: Node, db: PostgresDatabase, consumer: WebhookConsumer
) -> None:
    async with receiver() as hook:
        hook.answers = [503, 503, 503, 200]
        endpoint = await register(node, hook.url, "order.confirmed")
        event = await confirmed_event(db)
        for attempt in (1, 2, 3):
            with pytest.raises(DeliveryFailed):
                await consumer.handle(event, attempt)
        letter = await db.add_dead_letter(
            "webhooks", UUID(event["event_id"]), "1-0", dict(event), "answered 503", 3
        )
        [taken] = await db.take_dead_letters(letter)
        await consumer.handle(taken["payload"], 1)  # the replayed event, delivered anew
    assert len(hook.received) == 4
    [row] = await deliveries(node, endpoint["id"])
    assert (row["status"], row["attempts"]) == ("delivered", 4)


async def test_an_unreachable_endpoint_fails_and_other_types_are_not_sent(
    node: Node, db: PostgresDatabase, consumer: WebhookConsumer
) -> None:
    async with receiver() as hook:
        await register(node, hook.url, "order.cancelled")  # not this event's type
        event = await confirmed_event(db)
        await consumer.handle(event, 1)
        assert hook.received == []
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    endpoint = await register(node, f"http://127.0.0.1:{port}/x", "order.confirmed")
    with pytest.raises(DeliveryFailed, match="ConnectError"):
        await consumer.handle(event, 1)
    [row] = await deliveries(node, endpoint["id"])
    assert (row["status"], row["last_status_code"]) == ("pending", None)


async def test_the_relay_marks_the_events_an_endpoint_wants(
    node: Node, db: PostgresDatabase, consumer: WebhookConsumer
) -> None:
    await register(node, "http://127.0.0.1:9/hook", "order.confirmed")
    confirmed = await confirmed_event(db)  # claimed from the outbox as the relay does
    placed = await db.claim_outbox("test-relay", 1000, 30)
    marks = {e["type"]: e.get("webhooks") for e in placed["events"]}
    assert (confirmed.get("webhooks"), marks["order.placed"]) == (True, False)
    assert consumer.wants(confirmed)
    assert not consumer.wants({**confirmed, "type": "order.placed", "webhooks": False})
