"""Releases expired holds. Every node runs one; SKIP LOCKED keeps them out of each other's way."""

import asyncio
import logging

from backend.errors import AppError
from backend.store import Store

log = logging.getLogger(__name__)


async def sweep(store: Store, interval: float) -> None:
    while True:
        try:
            while (await store.expire_holds())["expired"]:
                pass  # a full batch may mean more are due: go again at once
        except AppError as exc:
            log.warning("sweeping expired holds failed: %s", exc)
        await asyncio.sleep(interval)
