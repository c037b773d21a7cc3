"""Debian's Chromium driven by Playwright (its own browser download cannot work here)."""

import json
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SESSION_KEY = "orderflow.session"  # where the dashboard keeps its credential, in sessionStorage


def require_chromium() -> None:
    """Skip without Chromium, except on CI, where a skipped browser test would hide a gap."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: apt-get install -y chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A desktop-sized page, and the list its uncaught script errors and its
    Content-Security-Policy violations land in."""
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            errors.append(message.text)

    page.on("console", on_console)
    return page, errors


def strict_policy(connect_to: Iterable[str] = ()) -> list[str]:
    """The directives the dashboard must work under: its own files only, so no inline
    script, style or handler; connections to the node and its Supabase project only."""
    sources = " ".join(["'self'", *connect_to])
    return ["default-src 'self'", f"connect-src {sources}", "img-src 'self' data:"]


async def open_dashboard(
    page: Page, base_url: str, node: str, connect_to: Iterable[str] = ()
) -> Page:
    """Go to a node's dashboard, check that it came under the strict policy (which the
    browser then enforces, and `new_page` reports breaches of), and wait until it shows
    that node's live snapshot."""
    response = await page.goto(base_url)
    assert response is not None
    policy = await response.header_value("content-security-policy") or ""
    directives = [directive.strip() for directive in policy.split(";")]
    assert set(strict_policy(connect_to)) <= set(directives), policy
    assert "unsafe" not in policy, policy
    await expect(page.get_by_test_id("node-name")).to_have_text(node)
    await expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
    return page


async def sign_in_with_key(page: Page, key: str) -> None:
    """Paste a credential into the sign-in dialog and wait until the header shows who."""
    await page.get_by_test_id("sign-in").click()
    await page.get_by_test_id("sign-in-key").fill(key)
    await page.get_by_test_id("sign-in-key-submit").click()
    await expect(page.get_by_test_id("account")).to_have_attribute("data-state", "signed-in")
    await expect(page.get_by_test_id("sign-in-dialog")).to_be_hidden()


async def kept_session(page: Page) -> dict[str, object] | None:
    """What the dashboard keeps in this tab's sessionStorage; localStorage must hold nothing."""
    local = await page.evaluate("() => localStorage.length")
    assert local == 0, "the dashboard wrote to localStorage"
    text = await page.evaluate("(key) => sessionStorage.getItem(key)", SESSION_KEY)
    kept: dict[str, object] | None = json.loads(text) if text else None
    return kept


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
