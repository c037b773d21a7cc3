"""The dashboard in a real browser, against real nodes sharing one Postgres and one Redis."""

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from backend.embedded import EmbeddedRedis
from tests.browser import chromium, new_page, open_dashboard, screenshot
from tests.support import node_settings, serve

pytestmark = pytest.mark.browser

FLASHING = re.compile(r"\bis-flashing\b")
LOW = re.compile(r"\bis-low\b")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def add_product(client: httpx.AsyncClient, on_hand: int, price_cents: int = 1250) -> str:
    sku = f"DASH-{uuid.uuid4().hex[:8].upper()}"
    body = {
        "sku": sku,
        "name": f"Dashboard product {sku[-4:]}",
        "price_cents": price_cents,
        "on_hand": on_hand,
        "low_stock_threshold": 2,
    }
    response = await client.post("/products", json=body)
    assert response.status_code == 201, response.text
    return sku


async def fill_checkout(page: Page, sku: str, quantity: int) -> None:
    await page.get_by_test_id("checkout-sku-0").select_option(sku)
    await page.get_by_test_id("checkout-qty-0").fill(str(quantity))


async def test_an_order_on_one_node_shows_live_on_the_other(
    browser: Browser, database_url: str, redis_server: EmbeddedRedis
) -> None:
    settings_1 = node_settings(database_url, "node-1", redis_url=redis_server.url)
    settings_2 = node_settings(database_url, "node-2", redis_url=redis_server.url)
    async with serve(settings_1) as node_1, serve(settings_2) as node_2:
        page_1, errors_1 = await new_page(browser)
        page_2, errors_2 = await new_page(browser)
        await open_dashboard(page_1, str(node_1.base_url), "node-1")
        await open_dashboard(page_2, str(node_2.base_url), "node-2")

        await add_product(node_2, on_hand=40, price_cents=2400)
        await add_product(node_2, on_hand=0, price_cents=900)
        sku = await add_product(node_1, on_hand=5, price_cents=1250)
        for page in (page_1, page_2):
            row = page.get_by_test_id(f"stock-row-{sku}")
            await expect(row).to_have_attribute("data-available", "5")

        await fill_checkout(page_1, sku, 3)
        await expect(page_1.get_by_test_id("checkout-subtotal")).to_have_text("$37.50")
        await expect(page_1.get_by_test_id("checkout-fee")).to_have_text("$7.50")
        await expect(page_1.get_by_test_id("checkout-total")).to_have_text("$45.00")
        await page_1.get_by_test_id("checkout-submit").click()
        status = page_1.get_by_test_id("order-status")
        await expect(status).to_have_attribute("data-status", "pending")
        await expect(page_1.get_by_test_id("order-total")).to_have_text("$45.00")

        row = page_2.get_by_test_id(f"stock-row-{sku}")
        origin = page_2.get_by_test_id(f"row-origin-{sku}")
        await expect(row).to_have_attribute("data-available", "2", timeout=5000)
        await expect(row).to_have_class(FLASHING)
        await expect(row).to_have_class(LOW)
        await expect(origin).to_have_text(re.compile(r"node-1\s*·\s*reserved"))
        news = page_2.get_by_test_id("event-feed").locator("li", has_text=sku).first
        await expect(news).to_contain_text("reserved")
        await expect(news).to_contain_text("node-1")

        # Confirmed through node-2: node-1's page hears it on its socket, as it follows the order.
        order_id = await page_1.get_by_test_id("order-id").get_attribute("title")
        confirmed = await node_2.post(f"/orders/{order_id}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        await expect(status).to_have_attribute("data-status", "confirmed")
        await expect(page_1.get_by_test_id("order-confirm")).to_be_disabled()
        await expect(origin).to_have_text(re.compile(r"node-2\s*·\s*sold"))
        await expect(row).to_have_attribute("data-available", "2")

        await screenshot(page_1, "dashboard-node-1")
        await screenshot(page_2, "dashboard-node-2")
        assert errors_1 == errors_2 == []
        await page_1.close()
        await page_2.close()


async def test_checkout_explains_out_of_stock(browser: Browser, database_url: str) -> None:
    async with serve(node_settings(database_url, "node-1")) as node:
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        sku = await add_product(node, on_hand=1, price_cents=500)
        await expect(page.get_by_test_id(f"stock-row-{sku}")).to_have_class(LOW)

        await fill_checkout(page, sku, 3)
        await page.get_by_test_id("checkout-submit").click()

        error = page.get_by_test_id("checkout-error")
        await expect(error).to_contain_text("Not enough stock")
        await expect(error).to_contain_text(f"{sku}: 3 requested, 1 available")
        await expect(page.get_by_test_id("order-panel")).to_be_hidden()
        assert errors == []
        await page.close()


async def test_dashboard_reconnects_and_catches_up(browser: Browser, database_url: str) -> None:
    """The socket drops and stays down for a while; the next snapshot shows what was missed."""
    reachable = True
    sockets: list[WebSocketRoute] = []

    async def route(socket: WebSocketRoute) -> None:
        if reachable:
            socket.connect_to_server()
            sockets.append(socket)
        else:
            await socket.close(code=1011, reason="node unreachable")

    async with serve(node_settings(database_url, "node-1")) as node:
        sku = await add_product(node, on_hand=5)
        page, errors = await new_page(browser)
        await page.route_web_socket(re.compile(r"/ws$"), route)
        await open_dashboard(page, str(node.base_url), "node-1")
        pill = page.get_by_test_id("connection-status")

        reachable = False
        await sockets[-1].close(code=1011, reason="dropped")
        await expect(pill).to_have_attribute("data-state", "reconnecting")
        await expect(pill).to_contain_text(re.compile(r"attempt [2-9]"))
        response = await node.post(
            f"/products/{sku}/adjustments", json={"delta": 4, "reason": "restock"}
        )
        assert response.status_code == 200, response.text

        reachable = True
        await expect(pill).to_have_attribute("data-state", "live", timeout=10_000)
        row = page.get_by_test_id(f"stock-row-{sku}")
        await expect(row).to_have_attribute("data-available", "9")
        await expect(row).to_have_class(FLASHING)
        assert errors == []
        await page.close()
