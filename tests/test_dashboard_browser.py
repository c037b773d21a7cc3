"""The dashboard in a real browser, against real nodes sharing one Postgres and one Redis.

Every page must come with the node's strict Content-Security-Policy (no inline
script, style or handler; connections to the node and its Supabase project
only), which Chromium enforces: a violation fails the test, as an uncaught
script error does.
"""

import json
import re
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, WebSocket, WebSocketRoute, expect

from backend.auth import keys
from backend.embedded import EmbeddedRedis
from database import PostgresDatabase
from tests.auth_server import ANON_KEY, AuthServer, User
from tests.browser import (
    chromium,
    kept_session,
    new_page,
    open_dashboard,
    screenshot,
    sign_in_with_key,
)
from tests.support import eventually, node_settings, serve, token

pytestmark = pytest.mark.browser

FLASHING = re.compile(r"\bis-flashing\b")
LOW = re.compile(r"\bis-low\b")
TILL = ["orders:write", "orders:read", "orders:manage"]  # a shop till's key: orders, no catalog


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def make_key(database_url: str, name: str, scopes: list[str]) -> tuple[str, UUID]:
    """A new API key on the test database: the key, and its id to revoke it by."""
    db = PostgresDatabase(database_url)
    await db.connect()
    try:
        created = await keys.create(db, name, scopes)
    finally:
        await db.close()
    return str(created["key"]), UUID(str(created["id"]))


async def revoke_key(database_url: str, key_id: UUID) -> None:
    db = PostgresDatabase(database_url)
    await db.connect()
    try:
        await db.revoke_api_key(key_id)
    finally:
        await db.close()


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


def sent_frames(page: Page, urls: list[str] | None = None) -> list[list[str]]:
    """What the page sends on each WebSocket it opens, one list per socket, oldest first;
    each socket's URL goes to `urls`."""
    sockets: list[list[str]] = []

    def opened(socket: WebSocket) -> None:
        frames: list[str] = []
        sockets.append(frames)
        if urls is not None:
            urls.append(socket.url)
        socket.on("framesent", lambda payload: frames.append(str(payload)))

    page.on("websocket", opened)
    return sockets


def received_frames(page: Page) -> list[str]:
    """What the page receives on every WebSocket it opens, in order."""
    frames: list[str] = []

    def opened(socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", opened)
    return frames


def auth_tokens(frames: list[str]) -> list[str]:
    messages = [json.loads(frame) for frame in frames]
    return [m["token"] for m in messages if m.get("type") == "auth"]


def placing_an_order(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/orders")


async def bearer_of(request: Request) -> str | None:
    return (await request.all_headers()).get("authorization")


async def test_an_order_on_one_node_shows_live_on_the_other(
    browser: Browser, database_url: str, redis_server: EmbeddedRedis
) -> None:
    key, _ = await make_key(database_url, "till-1", TILL)
    settings_1 = node_settings(database_url, "node-1", redis_url=redis_server.url)
    settings_2 = node_settings(database_url, "node-2", redis_url=redis_server.url)
    async with serve(settings_1) as node_1, serve(settings_2) as node_2:
        page_1, errors_1 = await new_page(browser)
        page_2, errors_2 = await new_page(browser)
        urls: list[str] = []
        sockets = sent_frames(page_1, urls)
        await open_dashboard(page_1, str(node_1.base_url), "node-1")
        await open_dashboard(page_2, str(node_2.base_url), "node-2")  # anonymous: it watches
        await sign_in_with_key(page_1, key)
        await expect(page_1.get_by_test_id("account-role")).to_have_text("API key")
        await expect(page_1.get_by_test_id("account-name")).to_have_text("till-1")

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
        async with page_1.expect_request(placing_an_order) as placed:
            await page_1.get_by_test_id("checkout-submit").click()
        assert await bearer_of(await placed.value) == f"Bearer {key}"
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
        listed = page_1.get_by_test_id(f"orders-item-{order_id}")
        await expect(listed).to_have_attribute("data-status", "confirmed")

        # The socket was told who is watching before it was asked to follow the order,
        # and never through its URL.
        messages = [json.loads(frame) for frame in sockets[0]]
        assert messages[0] == {"type": "auth", "token": key}
        assert {"type": "follow", "order_id": order_id} in messages[1:]
        assert urls == [f"{node_1.base_url}/ws".replace("http://", "ws://")]

        await screenshot(page_1, "dashboard-node-1")
        await screenshot(page_2, "dashboard-node-2")
        assert errors_1 == errors_2 == []
        await page_1.close()
        await page_2.close()


async def test_checkout_explains_out_of_stock(browser: Browser, database_url: str) -> None:
    key, _ = await make_key(database_url, "till-2", TILL)
    async with serve(node_settings(database_url, "node-1")) as node:
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, key)
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
    """The socket drops and stays down for a while; the next snapshot shows what was missed,
    and the new socket is told who is watching before anything else."""
    key, _ = await make_key(database_url, "till-3", TILL)
    reachable = True
    sockets: list[WebSocketRoute] = []
    sent: list[list[str]] = []  # what the page sent on each socket that reached the node

    async def route(socket: WebSocketRoute) -> None:
        if not reachable:
            await socket.close(code=1011, reason="node unreachable")
            return
        server = socket.connect_to_server()
        frames: list[str] = []

        def forward(message: str | bytes) -> None:
            frames.append(str(message))
            server.send(message)

        socket.on_message(forward)
        sockets.append(socket)
        sent.append(frames)

    async with serve(node_settings(database_url, "node-1")) as node:
        sku = await add_product(node, on_hand=5)
        page, errors = await new_page(browser)
        await page.route_web_socket(re.compile(r"/ws$"), route)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, key)
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
        await eventually(lambda: len(sent) == 2 and bool(sent[1]), 5, "the new socket spoke")
        assert json.loads(sent[1][0]) == {"type": "auth", "token": key}
        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-in")
        assert errors == []
        await page.close()


async def test_anonymous_sees_the_live_table_and_cannot_order(
    browser: Browser, database_url: str
) -> None:
    async with serve(node_settings(database_url, "node-1")) as node:
        page, errors = await new_page(browser)
        sockets = sent_frames(page)
        await open_dashboard(page, str(node.base_url), "node-1")
        sku = await add_product(node, on_hand=3)
        row = page.get_by_test_id(f"stock-row-{sku}")
        await expect(row).to_have_attribute("data-available", "3")
        await expect(row).to_have_class(FLASHING)

        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-out")
        gate = page.get_by_test_id("checkout-gate")
        await expect(gate).to_be_visible()
        await expect(gate).to_contain_text("Sign in to place an order.")
        await expect(page.get_by_test_id("checkout-sku-0")).to_be_disabled()
        await expect(page.get_by_test_id("checkout-submit")).to_be_disabled()
        await expect(page.get_by_test_id("admin-new-product")).to_be_hidden()
        await expect(page.get_by_test_id(f"manage-{sku}")).to_be_hidden()
        await expect(page.get_by_test_id("orders-card")).to_be_hidden()
        await screenshot(page, "dashboard-anonymous")

        # The prompt leads to the sign-in panel: an API key only, as this node names no
        # Supabase project.
        await page.get_by_test_id("checkout-sign-in").click()
        await expect(page.get_by_test_id("sign-in-dialog")).to_be_visible()
        await expect(page.get_by_test_id("sign-in-key")).to_be_focused()
        await expect(page.get_by_test_id("sign-in-password-form")).to_be_hidden()
        assert await kept_session(page) is None
        assert all(auth_tokens(frames) == [] for frames in sockets)
        assert errors == []
        await page.close()


async def test_a_bad_key_shows_the_error_and_stays_signed_out(
    browser: Browser, database_url: str
) -> None:
    unknown = keys.generate()  # well-formed, never registered
    async with serve(node_settings(database_url, "node-1")) as node:
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        await page.get_by_test_id("sign-in").click()
        error = page.get_by_test_id("sign-in-error")
        for bad, why in [(unknown, "unknown or revoked"), ("ofk_123", "not a well-formed")]:
            await page.get_by_test_id("sign-in-key").fill(bad)
            await page.get_by_test_id("sign-in-key-submit").click()
            await expect(error).to_contain_text("Not signed in")
            await expect(error).to_contain_text(why)
            await expect(page.get_by_test_id("sign-in-key")).to_have_value("")
            assert bad not in await page.content()

        await expect(page.get_by_test_id("sign-in-dialog")).to_be_visible()
        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-out")
        await expect(page.get_by_test_id("checkout-gate")).to_be_visible()
        assert await kept_session(page) is None
        assert errors == []
        await page.close()


async def test_sign_out_forgets_the_key_and_a_reload_keeps_the_session(
    browser: Browser, database_url: str
) -> None:
    key, _ = await make_key(database_url, "catalog admin", ["catalog:write", "ledger:read"])
    async with serve(node_settings(database_url, "node-1")) as node:
        sku = await add_product(node, on_hand=5)
        page, errors = await new_page(browser)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        sockets = sent_frames(page)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, key)
        await expect(page.get_by_test_id("admin-new-product")).to_be_visible()
        await expect(page.get_by_test_id(f"manage-{sku}")).to_be_visible()
        # A key without orders:write sees why it cannot check out.
        await expect(page.get_by_test_id("checkout-gate")).to_contain_text("orders:write")
        await expect(page.get_by_test_id("checkout-sign-in")).to_be_hidden()
        kept = await kept_session(page)
        assert kept is not None
        assert kept["credential"] == {"kind": "bearer", "token": key, "expires_at": None}
        assert key not in await page.content()

        # This tab keeps the session over a reload, and checks it with the node again.
        async with page.expect_request(lambda r: r.url.endswith("/whoami")) as checked:
            await open_dashboard(page, str(node.base_url), "node-1")
        assert await bearer_of(await checked.value) == f"Bearer {key}"
        await expect(page.get_by_test_id("account-name")).to_have_text("catalog admin")
        await eventually(lambda: len(sockets) == 2 and bool(sockets[1]), 5, "the socket spoke")
        assert auth_tokens(sockets[1])[:1] == [key]
        await screenshot(page, "dashboard-signed-in")

        await page.get_by_test_id("sign-out").click()
        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-out")
        await expect(page.get_by_test_id("sign-in")).to_be_visible()
        await expect(page.get_by_test_id("admin-new-product")).to_be_hidden()
        await expect(page.get_by_test_id("checkout-gate")).to_contain_text("Sign in")
        await expect(page.get_by_test_id("session-notice")).to_be_hidden()
        assert await kept_session(page) is None
        # The socket that knew the key is replaced by one that does not.
        await expect(page.get_by_test_id("connection-status")).to_have_attribute(
            "data-state", "live"
        )
        await eventually(lambda: len(sockets) == 3, 5, "a new socket opened")
        assert auth_tokens(sockets[2]) == []

        await open_dashboard(page, str(node.base_url), "node-1")
        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-out")
        assert not any(key in text for text in console)
        assert errors == []
        await page.close()


async def test_a_revoked_key_is_signed_out_with_a_reason(
    browser: Browser, database_url: str
) -> None:
    key, key_id = await make_key(database_url, "till-4", TILL)
    async with serve(node_settings(database_url, "node-1")) as node:
        sku = await add_product(node, on_hand=5)
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, key)
        await revoke_key(database_url, key_id)

        await fill_checkout(page, sku, 1)
        await page.get_by_test_id("checkout-submit").click()
        notice = page.get_by_test_id("session-notice")
        await expect(notice).to_be_visible()
        await expect(notice).to_contain_text(
            "You were signed out: The API key is unknown or revoked."
        )
        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-out")
        await expect(page.get_by_test_id("checkout-gate")).to_be_visible()
        assert await kept_session(page) is None
        await page.get_by_test_id("notice-sign-in").click()
        await expect(page.get_by_test_id("sign-in-dialog")).to_be_visible()
        assert errors == []
        await page.close()


async def test_a_pasted_token_signs_out_when_it_expires(
    browser: Browser, database_url: str
) -> None:
    async with serve(node_settings(database_url, "node-1")) as node:
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, token("cust-8", minutes=0.1))
        notice = page.get_by_test_id("session-notice")
        await expect(notice).to_contain_text("Your token expired", timeout=15_000)
        await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-out")
        await expect(page.get_by_test_id("checkout-gate")).to_be_visible()
        assert await kept_session(page) is None
        assert errors == []
        await page.close()


async def test_a_customer_orders_for_themselves_and_sees_their_orders(
    browser: Browser, database_url: str
) -> None:
    async with serve(node_settings(database_url, "node-1")) as node:
        sku = await add_product(node, on_hand=5, price_cents=1000)
        page, errors = await new_page(browser)
        await open_dashboard(page, str(node.base_url), "node-1")
        await sign_in_with_key(page, token("cust-7"))
        await expect(page.get_by_test_id("account-role")).to_have_text("Customer")
        await expect(page.get_by_test_id("account-name")).to_have_text("cust-7@example.com")
        await expect(page.get_by_test_id("admin-new-product")).to_be_hidden()
        await expect(page.get_by_test_id(f"manage-{sku}")).to_be_hidden()
        await expect(page.get_by_test_id("checkout-customer")).to_be_hidden()
        await expect(page.get_by_test_id("orders-card")).to_contain_text("Your orders")

        await fill_checkout(page, sku, 2)
        await page.get_by_test_id("checkout-submit").click()
        await expect(page.get_by_test_id("order-status")).to_have_attribute(
            "data-status", "pending"
        )
        await expect(page.get_by_test_id("order-confirm")).to_be_hidden()
        order_id = await page.get_by_test_id("order-id").get_attribute("title")
        order = (await node.get(f"/orders/{order_id}")).json()
        assert order["customer_id"] == "cust-7"
        listed = page.get_by_test_id(f"orders-item-{order_id}")
        await expect(listed).to_have_attribute("data-status", "pending")
        await screenshot(page, "dashboard-customer")

        await page.get_by_test_id("order-cancel").click()
        await expect(page.get_by_test_id("order-status")).to_have_attribute(
            "data-status", "cancelled"
        )
        await expect(listed).to_have_attribute("data-status", "cancelled")
        assert errors == []
        await page.close()


async def test_email_and_password_through_supabase_auth_renewed_before_expiry(
    browser: Browser, database_url: str
) -> None:
    """Supabase Auth is a fake here (tests/auth_server.py); the node believes its tokens as it
    would the project's, and names it in /info so the dashboard offers email and password."""
    staff = User(password="correct horse battery staple", role="staff")
    async with AuthServer({"staff@example.com": staff}, expires_in=6) as supabase:
        # SUPABASE_URL normally comes with the service role key, which makes the node use
        # the Supabase API for its data; this node keeps Postgres and signs in through Auth,
        # believing the issuer SUPABASE_URL implies, as a node on Supabase does.
        update = {"supabase_url": supabase.url, "supabase_anon_key": ANON_KEY, "auth_issuer": None}
        settings = node_settings(database_url, "node-1").model_copy(update=update)
        async with serve(settings) as node:
            # Tokens must now come from this project, the test client's too.
            admin = token("test-admin", "admin", iss=supabase.issuer)
            node.headers["Authorization"] = f"Bearer {admin}"
            info = (await node.get("/info")).json()
            assert info["auth"] == {"supabase_url": supabase.url, "anon_key": ANON_KEY}
            page, errors = await new_page(browser)
            sockets = sent_frames(page)
            await open_dashboard(page, str(node.base_url), "node-1", [supabase.url])
            await page.get_by_test_id("sign-in").click()
            await expect(page.get_by_test_id("sign-in-email")).to_be_focused()
            await screenshot(page, "dashboard-sign-in")

            await page.get_by_test_id("sign-in-email").fill("staff@example.com")
            await page.get_by_test_id("sign-in-password").fill("wrong")
            await page.get_by_test_id("sign-in-password-submit").click()
            await expect(page.get_by_test_id("sign-in-error")).to_contain_text(
                "Invalid login credentials"
            )
            await expect(page.get_by_test_id("sign-in-password")).to_have_value("")

            await page.get_by_test_id("sign-in-password").fill(staff.password)
            await page.get_by_test_id("sign-in-password-submit").click()
            account = page.get_by_test_id("account")
            await expect(account).to_have_attribute("data-state", "signed-in")
            await expect(page.get_by_test_id("account-role")).to_have_text("Staff")
            await expect(page.get_by_test_id("account-name")).to_have_text("staff@example.com")
            signed_in = supabase.grants[1]
            assert (signed_in.grant_type, signed_in.apikey) == ("password", ANON_KEY)
            assert signed_in.body == {"email": "staff@example.com", "password": staff.password}
            first = signed_in.access_token
            assert first is not None
            kept = await kept_session(page)
            assert kept is not None
            assert staff.password not in json.dumps(kept)
            await eventually(lambda: first in auth_tokens(sockets[0]), 5, "the socket has it")

            # A quarter of its life before the token expires, the session is renewed, and
            # the socket and the API carry the new token.
            supabase.expires_in = 3600
            await supabase.wait_for_grants(3)
            renewed = supabase.grants[2]
            assert (renewed.grant_type, renewed.apikey) == ("refresh_token", ANON_KEY)
            assert set(renewed.body) == {"refresh_token"}
            second = renewed.access_token
            assert second is not None
            assert second != first
            await eventually(lambda: second in auth_tokens(sockets[0]), 5, "the socket renewed")
            sku = await add_product(node, on_hand=5)
            await fill_checkout(page, sku, 1)
            async with page.expect_request(placing_an_order) as placed:
                await page.get_by_test_id("checkout-submit").click()
            assert await bearer_of(await placed.value) == f"Bearer {second}"
            await expect(page.get_by_test_id("order-confirm")).to_be_visible()

            await page.get_by_test_id("sign-out").click()
            await expect(account).to_have_attribute("data-state", "signed-out")
            assert await kept_session(page) is None
            assert errors == []
            await page.close()


async def test_an_orders_lines_arrive_in_one_batch_and_update_every_row(
    browser: Browser, database_url: str
) -> None:
    async with serve(node_settings(database_url, "node-1")) as node:
        page, errors = await new_page(browser)
        frames = received_frames(page)
        await open_dashboard(page, str(node.base_url), "node-1")
        skus = [await add_product(node, on_hand=6) for _ in range(3)]
        rows = [page.get_by_test_id(f"stock-row-{sku}") for sku in skus]
        for row in rows:
            await expect(row).to_have_attribute("data-available", "6")

        body = {"items": [{"sku": sku, "quantity": 2} for sku in skus], "customer_id": "c-1"}
        response = await node.post(
            "/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert response.status_code == 201, response.text

        for row in rows:
            await expect(row).to_have_attribute("data-available", "4")
        batches = [m for m in map(json.loads, frames) if m["type"] == "batch"]
        assert [sorted(m["sku"] for m in batch["messages"]) for batch in batches] == [sorted(skus)]
        news = page.get_by_test_id("event-feed").locator("li", has_text="reserved")
        await expect(news).to_have_count(3)
        assert errors == []
        await page.close()
