"""Releases expired holds. Every node runs one; SKIP LOCKED keeps them out of each other's way."""

import asyncio
from collections.abc import Callable

from backend.store import Store


async def sweep(store: Store, interval: float, beat: Callable[[], None]) -> None:
    """Sweep every `interval` seconds; a failure ends it (the supervisor restarts it)."""
    while True:
        while (await store.expire_holds())["expired"]:
            pass  # a full batch may mean more are due: go again at once
        beat()
        await asyncio.sleep(interval)
