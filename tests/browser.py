"""Debian's Chromium driven by Playwright (its own browser download cannot work here)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


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
    """A desktop-sized page, and the list its uncaught script errors land in."""
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


async def open_dashboard(page: Page, base_url: str, node: str) -> Page:
    """Go to a node's dashboard and wait until it shows that node's live snapshot."""
    await page.goto(base_url)
    await expect(page.get_by_test_id("node-name")).to_have_text(node)
    await expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
