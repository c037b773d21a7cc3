"""The notifications consumer against real Postgres and a real SMTP server (the sink):
one mail per event however often it comes, skipped without an email, the receipt
kept and served to whoever may read the order, in the data dir or a Storage bucket."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import respx
from pydantic import SecretStr

from backend.documents import OrderEvent
from backend.embedded import EmbeddedRedis
from backend.embedded.smtp import MailSink
from backend.errors import AppError
from backend.notify.consumer import NotificationBusy, NotificationConsumer
from backend.notify.receipts import render
from backend.notify.storage import BucketReceipts
from database import PostgresDatabase
from tests.hooks import receiver
from tests.mail import html_of, mail_sink, mails_for, text_of
from tests.postgrest import ANON_KEY, SERVICE_ROLE_KEY, SUPABASE_URL, PostgREST
from tests.storage_api import StorageAPI
from tests.support import (
    Node,
    bearer,
    eventually,
    make_product,
    node_settings,
    run_node,
    token,
)

CUSTOMER = "cust-notify"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with mail_sink(tmp_path / "mail") as running:
        yield running


@pytest.fixture
async def node(database_url: str, sink: MailSink, tmp_path: Path) -> AsyncIterator[Node]:
    settings = node_settings(
        database_url,
        smtp_url=sink.url,
        receipts_dir=str(tmp_path / "receipts"),
        worker_claim_idle_seconds=0.5,
    )
    async with run_node(settings) as running:
        yield running


def consumer_of(node: Node) -> NotificationConsumer:
    """A consumer as a node's runner builds it: one per node, from the node itself."""
    return NotificationConsumer(node.state["node"])


async def confirmed_order(db: PostgresDatabase, customer_id: str | None = CUSTOMER) -> UUID:
    product = await make_product(db, on_hand=10, price_cents=1250)
    placed = await db.place_order(
        [{"sku": product["sku"], "quantity": 2}], customer_id, None, "test", 900, 2000, 100
    )
    order_id = UUID(placed["order"]["id"])
    await db.confirm_order(order_id, "test")
    return order_id


async def event_of(db: PostgresDatabase, order_id: UUID, kind: str) -> OrderEvent:
    """The event as the stream would carry it: straight from the outbox."""
    claimed = await db.claim_outbox("test-relay", 1000, 30)
    found = [e for e in claimed["events"] if e["order_id"] == str(order_id) and e["type"] == kind]
    assert len(found) == 1, claimed
    event: OrderEvent = found[0]
    return event


async def notification(database_url: str, event_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "select status, recipient, receipt from notifications where event_id = $1",
            UUID(event_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def count_sent_events(db: PostgresDatabase, order_id: UUID) -> int:
    return sum(e["type"] == "notification.sent" for e in await db.order_timeline(order_id))


async def test_one_mail_per_event_however_often_it_is_delivered(
    db: PostgresDatabase, node: Node, sink: MailSink, database_url: str
) -> None:
    await db.upsert_customer(CUSTOMER, "ada@example.com", "Ada <Lovelace>")
    order_id = await confirmed_order(db)
    event = await event_of(db, order_id, "order.confirmed")
    consumer = consumer_of(node)
    assert consumer.wants(event)
    assert not consumer.wants({**event, "type": "order.placed"})

    await consumer.handle(event, 1)
    await consumer.handle(event, 1)  # a redelivery
    await consumer_of(node).handle(event, 2)  # another node's worker, later

    mails = mails_for(sink, event["event_id"])
    assert len(mails) == 1
    mail = mails[0]
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == f"Your OrderFlow order {str(order_id)[:8].upper()} is confirmed"
    assert mail.get_content_type() == "multipart/alternative"
    assert "Hello Ada <Lovelace>," in text_of(mail)
    assert "Total: $30.00" in text_of(mail)  # 2 x $12.50 and a 20% fee
    assert "Ada &lt;Lovelace&gt;" in html_of(mail)
    row = await notification(database_url, event["event_id"])
    assert (row["status"], row["recipient"]) == ("sent", "ada@example.com")
    assert await count_sent_events(db, order_id) == 1


async def test_the_same_event_at_two_workers_at_once_is_mailed_once(
    db: PostgresDatabase, node: Node, sink: MailSink
) -> None:
    await db.upsert_customer(CUSTOMER, "ada@example.com", None)
    order_id = await confirmed_order(db)
    event = await event_of(db, order_id, "order.confirmed")
    first, second = consumer_of(node), consumer_of(node)
    outcomes = await _both(first.handle(event, 1), second.handle(event, 1))
    busy = [o for o in outcomes if isinstance(o, NotificationBusy)]
    assert len(busy) <= 1, outcomes  # one sends; the other finds it sent, or busy
    assert all(o is None or isinstance(o, NotificationBusy) for o in outcomes), outcomes
    await second.handle(event, 2)  # the stream's retry of the busy one: nothing to do
    assert len(mails_for(sink, event["event_id"])) == 1


async def _both(*calls: Any) -> list[BaseException | None]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_without_an_email_the_notification_is_skipped_and_the_receipt_kept(
    db: PostgresDatabase, node: Node, sink: MailSink, database_url: str
) -> None:
    order_id = await confirmed_order(db, customer_id="cust-no-email")
    event = await event_of(db, order_id, "order.confirmed")
    await consumer_of(node).handle(event, 1)
    await consumer_of(node).handle(event, 1)
    assert sink.messages() == []
    row = await notification(database_url, event["event_id"])
    assert (row["status"], row["recipient"]) == ("skipped", None)
    assert row["receipt"] is not None
    response = await node.client.get(f"/orders/{order_id}/receipt", params={"format": "text"})
    assert response.status_code == 200
    assert "Status: paid" in response.text
    assert await count_sent_events(db, order_id) == 0  # nothing was sent


async def test_the_receipt_is_served_to_whoever_may_read_the_order(
    db: PostgresDatabase, node: Node
) -> None:
    order_id = await confirmed_order(db)
    path = f"/orders/{order_id}/receipt"
    owner, other = bearer(token(CUSTOMER)), bearer(token("cust-other"))
    none_yet = await node.client.get(path, headers=owner)
    assert (none_yet.status_code, none_yet.json()["code"]) == (404, "NOT_FOUND")

    await consumer_of(node).handle(await event_of(db, order_id, "order.confirmed"), 1)
    page = await node.client.get(path, headers=owner)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>Thank you: your order is confirmed</h1>" in page.text
    text = await node.client.get(path, params={"format": "text"}, headers=owner)
    assert text.headers["content-type"].startswith("text/plain")
    assert "Subtotal: $25.00" in text.text
    assert (await node.client.get(path)).status_code == 200  # staff and admins: any order
    refused = await node.client.get(path, headers=other)
    assert (refused.status_code, refused.json()["code"]) == (404, "NOT_FOUND")
    assert (await node.client.get(path, headers={"Authorization": ""})).status_code == 401


async def test_a_claim_whose_sender_died_is_sent_after_the_idle_time(
    db: PostgresDatabase, node: Node, sink: MailSink
) -> None:
    await db.upsert_customer(CUSTOMER, "ada@example.com", None)
    order_id = await confirmed_order(db)
    event = await event_of(db, order_id, "order.confirmed")
    # A worker claimed it and died before its mail went out (or before it said so).
    await db.claim_notification(UUID(event["event_id"]), order_id, "ada@example.com", "s")
    consumer = consumer_of(node)
    with pytest.raises(NotificationBusy):
        await consumer.handle(event, 1)  # it may still be at it
    assert sink.messages() == []

    async def retried() -> bool:
        try:
            await consumer.handle(event, 2)
        except NotificationBusy:
            return False
        return True

    await _until(retried, 5)  # past WORKER_CLAIM_IDLE_SECONDS (0.5 s here)
    assert len(mails_for(sink, event["event_id"])) == 1
    await consumer.handle(event, 3)
    assert len(mails_for(sink, event["event_id"])) == 1


async def _until(check: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "did not hold in time"
        await asyncio.sleep(0.1)


async def test_a_send_that_failed_is_sent_on_the_retry_once(
    db: PostgresDatabase, database_url: str, tmp_path: Path
) -> None:
    await db.upsert_customer(CUSTOMER, "ada@example.com", None)
    order_id = await confirmed_order(db)
    event = await event_of(db, order_id, "order.confirmed")
    with mail_sink(tmp_path / "mail") as sink:
        port = sink.port
    # The mail server is down: the handler fails, and the stream will retry it.
    settings = node_settings(
        database_url,
        smtp_url=f"smtp://127.0.0.1:{port}",
        receipts_dir=str(tmp_path / "receipts"),
        worker_claim_idle_seconds=60,  # no takeover: the retry is the worker's own
    )
    async with run_node(settings) as running:
        consumer = consumer_of(running)
        with pytest.raises(ConnectionRefusedError):
            await consumer.handle(event, 1)
        restarted = MailSink(tmp_path / "mail", port)
        restarted.start()
        try:
            await consumer.handle(event, 2)
            await consumer.handle(event, 3)
        finally:
            restarted.stop()
    assert len(mails_for(restarted, event["event_id"])) == 1
    assert (await notification(database_url, event["event_id"]))["status"] == "sent"


async def test_cancelled_and_refunded_orders_are_notified_too(
    db: PostgresDatabase, node: Node, sink: MailSink
) -> None:
    await db.upsert_customer(CUSTOMER, "ada@example.com", None)
    product = await make_product(db, on_hand=5, price_cents=1000)
    placed = await db.place_order(
        [{"sku": product["sku"], "quantity": 1}], CUSTOMER, None, "test", 900, 0, 100
    )
    cancelled_id = UUID(placed["order"]["id"])
    await db.cancel_order(cancelled_id, "test", reason="payment_declined")
    refunded_id = await confirmed_order(db)
    await db.refund_order(refunded_id, None, True, "damaged", None, None, "test")
    consumer = consumer_of(node)
    await consumer.handle(await event_of(db, cancelled_id, "order.cancelled"), 1)
    await consumer.handle(await event_of(db, refunded_id, "order.refunded"), 1)
    subjects = sorted(str(m["Subject"]) for m in sink.messages())
    assert [s.rsplit(" ", 2)[-2:] for s in subjects] in (
        [["was", "cancelled"], ["was", "refunded"]],
        [["was", "refunded"], ["was", "cancelled"]],
    )
    texts = " ".join(text_of(m) for m in sink.messages())
    assert "cancelled (the payment was declined)" in texts
    assert "reason: damaged" in texts


# Supabase Storage -----------------------------------------------------------


@pytest.fixture
def storage() -> Iterator[StorageAPI]:
    api = StorageAPI()
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        api.mount(router)
        yield api


async def test_receipts_go_to_a_private_bucket_created_on_first_use(
    storage: StorageAPI, db: PostgresDatabase
) -> None:
    order_id = await confirmed_order(db)
    order = await db.get_order(order_id)
    receipt = render(order, "order.confirmed")
    store = BucketReceipts(SUPABASE_URL, SERVICE_ROLE_KEY, "receipts", 5.0)
    try:
        assert await store.get(order_id, "html") is None  # no receipt yet
        assert storage.buckets["receipts"]["public"] is False
        assert await store.put(order_id, receipt) == f"receipts/{order_id}"
        assert await store.get(order_id, "html") == receipt.html
        assert await store.get(order_id, "text") == receipt.text
        refunded = render(order, "order.refunded")
        await store.put(order_id, refunded)  # the latest replaces the one before
        assert await store.get(order_id, "text") == refunded.text
    finally:
        await store.aclose()
    kept = storage.objects[("receipts", f"{order_id}/receipt.html")]
    assert kept.content_type == "text/html; charset=utf-8"
    assert sorted(path for _, path in storage.objects) == [
        f"{order_id}/receipt.html",
        f"{order_id}/receipt.txt",
    ]


async def test_a_public_bucket_is_refused_and_a_wrong_key_fails_clearly(
    storage: StorageAPI,
) -> None:
    storage.add_bucket("open", public=True)
    store = BucketReceipts(SUPABASE_URL, SERVICE_ROLE_KEY, "open", 5.0)
    try:
        with pytest.raises(AppError, match="public; receipts name customers"):
            await store.get(UUID(int=1), "html")
    finally:
        await store.aclose()
    wrong = BucketReceipts(SUPABASE_URL, ANON_KEY, "receipts", 5.0)
    try:
        with pytest.raises(AppError, match="STORAGE_UNAVAILABLE"):
            await wrong.get(UUID(int=1), "html")
    finally:
        await wrong.aclose()
    assert "receipts" not in storage.buckets


@asynccontextmanager
async def supabase_project(database_url: str) -> AsyncIterator[StorageAPI]:
    """PostgREST and Storage stood in for, as one Supabase project's API."""
    rest, storage = PostgREST(database_url), StorageAPI()
    await rest.start()
    try:
        with respx.mock(assert_all_called=False) as router:
            router.route(host="127.0.0.1").pass_through()
            router.get(f"{SUPABASE_URL}/auth/v1/.well-known/jwks.json").respond(json={"keys": []})
            rest.mount(router)
            storage.mount(router)
            yield storage
    finally:
        await rest.close()


async def test_a_node_in_supabase_mode_keeps_receipts_in_the_bucket_and_serves_them(
    db: PostgresDatabase, database_url: str, sink: MailSink
) -> None:
    await db.upsert_customer(CUSTOMER, "ada@example.com", None)
    order_id = await confirmed_order(db)
    event = await event_of(db, order_id, "order.confirmed")
    settings = node_settings(
        database_url,
        supabase_url=SUPABASE_URL,
        supabase_service_role_key=SecretStr(SERVICE_ROLE_KEY),
        smtp_url=sink.url,
    )
    async with supabase_project(database_url) as storage, run_node(settings) as running:
        assert running.state["db"].mode == "supabase"
        consumer = consumer_of(running)
        try:
            await consumer.handle(event, 1)
            await consumer.handle(event, 1)
        finally:
            await consumer.aclose()
        assert storage.buckets["receipts"]["public"] is False
        kept = storage.objects[("receipts", f"{order_id}/receipt.txt")].content.decode()
        assert "Status: paid" in kept
        owner = bearer(token(CUSTOMER))
        served = await running.client.get(
            f"/orders/{order_id}/receipt", params={"format": "text"}, headers=owner
        )
        assert (served.status_code, served.text) == (200, kept)
    assert len(mails_for(sink, event["event_id"])) == 1
    row = await notification(database_url, event["event_id"])
    assert (row["status"], row["receipt"]) == ("sent", f"receipts/{order_id}")


# End to end, through the events stream ---------------------------------------


async def test_placed_paid_confirmed_then_the_receipt_is_mailed_and_announced(
    database_url: str,
    db: PostgresDatabase,
    redis_server: EmbeddedRedis,
    sink: MailSink,
    tmp_path: Path,
) -> None:
    product = await make_product(db, on_hand=10, price_cents=1250)
    settings = node_settings(
        database_url,
        redis_url=redis_server.url,
        channel_prefix=f"t{uuid.uuid4().hex[:8]}:",  # a stream of this test's own
        payment_provider="simulated",
        payment_delay_seconds=0.05,
        workers="payments,notifications,webhooks",
        worker_retry_base_seconds=0.05,
        relay_interval_seconds=0.05,
        smtp_url=sink.url,
        receipts_dir=str(tmp_path / "receipts"),
        webhook_allow_http=True,
    )
    customer = bearer(token("cust-e2e"))  # signs in as cust-e2e@example.com
    async with receiver() as hook, run_node(settings) as running:
        client = running.client
        endpoint = await client.post(
            "/admin/webhooks", json={"url": hook.url, "event_types": ["notification.sent"]}
        )
        assert endpoint.status_code == 201
        placed = await client.post(
            "/orders",
            json={"items": [{"sku": product["sku"], "quantity": 2}]},
            headers=customer,
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]

        def mailed() -> bool:
            return any(m["To"] == "cust-e2e@example.com" for m in sink.messages())

        await eventually(mailed, 20, "the receipt mail reached the sink")
        await eventually(lambda: len(hook.received) == 1, 20, "notification.sent was delivered")
        timeline = (await client.get(f"/orders/{order_id}/events", headers=customer)).json()
        assert [e["type"] for e in timeline["items"]] == [
            "order.placed",
            "payment.succeeded",
            "order.confirmed",
            "notification.sent",
        ]
        receipt = await client.get(
            f"/orders/{order_id}/receipt", params={"format": "text"}, headers=customer
        )
        assert receipt.status_code == 200
        assert "Total: $30.00" in receipt.text
    [mail] = sink.messages()
    assert mail["Subject"] == f"Your OrderFlow order {order_id[:8].upper()} is confirmed"
    assert "Status: paid" in text_of(mail)
    assert json.loads(hook.received[0].body)["type"] == "notification.sent"
