"""The order lifecycle on the dashboard, in a real browser, against real nodes, Postgres,
Redis and the SMTP sink: an order's timeline filling in live as the simulated provider
pays it, and an admin replaying a dead letter.

The page must stay within the node's strict Content-Security-Policy and raise no
script error (`new_page` collects both).
"""

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Request, expect

from backend.embedded import EmbeddedRedis
from database import PostgresDatabase
from tests.browser import chromium, new_page, open_dashboard, screenshot, sign_in_with_key
from tests.events_kit import hold_the_relay, let_the_relay_go
from tests.hooks import receiver
from tests.mail import mail_sink
from tests.support import ADMIN_TOKEN, eventually, node_settings, serve, token

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


def streaming(database_url: str, redis: EmbeddedRedis, **overrides: Any) -> Any:
    return node_settings(
        database_url,
        "node-1",
        redis_url=redis.url,
        channel_prefix=f"t{uuid.uuid4().hex[:8]}:",  # a stream of this test's own
        relay_interval_seconds=0.05,
        worker_retry_base_seconds=0.05,
        **overrides,
    )


async def add_product(client: httpx.AsyncClient, on_hand: int, price_cents: int) -> str:
    sku = f"LIFE-{uuid.uuid4().hex[:8].upper()}"
    body = {"sku": sku, "name": f"Lifecycle {sku[-4:]}", "price_cents": price_cents}
    response = await client.post("/products", json={**body, "on_hand": on_hand})
    assert response.status_code == 201, response.text
    return sku


def timeline_reads(request: Request) -> bool:
    return request.method == "GET" and re.search(r"/orders/[^/]+/events$", request.url) is not None


async def test_the_timeline_fills_in_live_as_the_order_is_paid(
    browser: Browser,
    database_url: str,
    db: PostgresDatabase,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    with mail_sink(tmp_path / "mail") as sink:
        settings = streaming(
            database_url,
            redis_server,
            payment_provider="simulated",
            payment_delay_seconds=0.05,
            workers="payments,notifications",
            smtp_url=sink.url,
            receipts_dir=str(tmp_path / "receipts"),
        )
        # Nothing reaches the stream until the page shows the order: whatever the
        # timeline gains after that came over the socket.
        await hold_the_relay(db)
        async with serve(settings) as node:
            sku = await add_product(node, on_hand=5, price_cents=1000)
            page, errors = await new_page(browser)
            reads: list[str] = []
            page.on("request", lambda r: reads.append(r.url) if timeline_reads(r) else None)
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            await open_dashboard(page, str(node.base_url), "node-1")
            await sign_in_with_key(page, token("cust-timeline"))
            await expect(page.get_by_test_id(f"stock-row-{sku}")).to_be_visible()

            payment = page.get_by_test_id("checkout-payment")
            await expect(payment).to_be_visible()
            await payment.select_option("test_ok")
            await page.get_by_test_id("checkout-sku-0").select_option(sku)
            await page.get_by_test_id("checkout-qty-0").fill("2")
            async with page.expect_request(
                lambda r: r.method == "POST" and r.url.endswith("/orders")
            ) as placing:
                await page.get_by_test_id("checkout-submit").click()
            sent = (await placing.value).post_data_json
            assert sent is not None
            assert sent["payment_method"] == "test_ok"

            timeline = page.get_by_test_id("order-timeline")
            items = timeline.locator("li")
            await expect(items).to_have_count(1)
            await expect(page.get_by_test_id("timeline-order.placed")).to_contain_text("Placed")
            await expect(page.get_by_test_id("order-receipt")).to_be_hidden()
            await screenshot(page, "lifecycle-placed")

            await let_the_relay_go(database_url)
            for kind, text in [
                ("payment.succeeded", "Paid"),
                ("order.confirmed", "Confirmed"),
                ("notification.sent", "Receipt sent"),
            ]:
                await expect(page.get_by_test_id(f"timeline-{kind}")).to_contain_text(
                    text, timeout=15_000
                )
            await expect(items).to_have_count(4)
            labels = await timeline.locator(".timeline-label").all_text_contents()
            assert labels == ["Placed", "Paid", "Confirmed", "Receipt sent"]
            await expect(page.get_by_test_id("timeline-payment.succeeded")).to_contain_text(
                "$24.00"
            )
            await expect(page.get_by_test_id("order-status")).to_have_attribute(
                "data-status", "confirmed"
            )
            assert len(reads) == 1, reads  # loaded once; the rest came live
            assert len(navigations) == 1, navigations  # never reloaded
            await screenshot(page, "lifecycle-timeline")

            await page.get_by_test_id("order-receipt").click()
            receipt = page.get_by_test_id("receipt-text")
            await expect(receipt).to_contain_text("Total: $24.00")
            await screenshot(page, "lifecycle-receipt")
            assert errors == []
            await page.close()


async def test_an_admin_sees_a_dead_letter_and_replays_it(
    browser: Browser, database_url: str, redis_server: EmbeddedRedis
) -> None:
    settings = streaming(
        database_url,
        redis_server,
        workers="webhooks",
        worker_max_attempts=1,
        webhook_allow_http=True,
    )
    async with receiver() as hook, serve(settings) as node:
        hook.answers = [500]  # the first delivery fails; with one attempt, a dead letter
        endpoint = await node.post(
            "/admin/webhooks", json={"url": hook.url, "event_types": ["order.placed"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, ADMIN_TOKEN)
        card = page.get_by_test_id("lifecycle-card")
        await expect(card).to_be_visible()
        await expect(page.get_by_test_id("dead-letters")).to_contain_text("No dead letters.")
        await expect(page.get_by_test_id("lifecycle-group-webhooks")).to_be_visible()

        sku = await add_product(node, on_hand=5, price_cents=700)
        placed = await node.post("/orders", json={"items": [{"sku": sku, "quantity": 1}]})
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]
        letter = page.locator("[data-testid^=dead-letter-]")
        await expect(letter).to_have_count(1, timeout=15_000)  # the panel reads every 3 s
        await expect(letter).to_contain_text("webhooks")
        await expect(letter).to_contain_text("order.placed")
        await expect(letter).to_contain_text(order_id[:8])
        await expect(letter).to_contain_text("500")
        await expect(page.get_by_test_id("lifecycle-dead")).to_have_text("1")
        await screenshot(page, "lifecycle-dead-letter")

        # The receiver answers 200 from now on: the replay is delivered, and the letter goes.
        await letter.get_by_role("button", name="Replay").click()
        await expect(page.get_by_test_id("toasts")).to_contain_text("Replayed 1 dead letter")
        await expect(page.get_by_test_id("dead-letters")).to_contain_text("No dead letters.")
        await expect(page.get_by_test_id("lifecycle-dead")).to_have_text("0")
        await expect(page.get_by_test_id("dead-replay-all")).to_be_disabled()
        await eventually(lambda: len(hook.received) == 2, 15, "the replay was delivered")
        await screenshot(page, "lifecycle-replayed")
        assert errors == []
        await page.close()
