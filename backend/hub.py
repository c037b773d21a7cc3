"""Fans applied changes out to this node's WebSocket clients.

Offering a change to a client never waits: each client has a mailbox holding
the latest change per SKU (older ones are coalesced away) and a few control
messages, so a client that stops reading holds at most one entry per SKU and
slows nobody; when it reads again it gets the latest state.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from uuid import UUID

from cachetools import TTLCache

from backend.cache import Json, Outcome, StockCache
from backend.errors import AppError

log = logging.getLogger(__name__)

OrderFetcher = Callable[[UUID], Awaitable[Json]]


class Mailbox:
    def __init__(self, skus: frozenset[str] | None, max_pending: int) -> None:
        self.skus = skus
        self.orders: set[str] = set()
        self.coalesced = 0
        self._max_pending = max_pending
        self._stock: dict[str, Json] = {}
        self._control: deque[Json] = deque(maxlen=64)
        self._resnapshot = False
        self._ready = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._stock) + len(self._control)

    def wants(self, sku: str) -> bool:
        return self.skus is None or sku in self.skus

    def offer(self, change: Json) -> None:
        sku = change["sku"]
        if not self.wants(sku):
            return
        if sku in self._stock:
            self.coalesced += 1
        elif len(self._stock) >= self._max_pending:
            # Too far behind to be worth catching up change by change.
            self.coalesced += len(self._stock)
            self._stock.clear()
            self._resnapshot = True
        self._stock[sku] = change
        self._ready.set()

    def say(self, message: Json) -> None:
        self._control.append(message)
        self._ready.set()

    def resnapshot(self) -> None:
        self._stock.clear()
        self._resnapshot = True
        self._ready.set()

    async def take(self) -> tuple[bool, list[Json]]:
        """Wait for news; return (send a fresh snapshot first?, messages)."""
        await self._ready.wait()
        self._ready.clear()
        snapshot, self._resnapshot = self._resnapshot, False
        messages = list(self._control)
        self._control.clear()
        messages += [{"type": "stock", **change} for change in self._stock.values()]
        self._stock.clear()
        return snapshot, messages


class Hub:
    def __init__(
        self, node_id: str, cache: StockCache, fetch_order: OrderFetcher, max_pending: int
    ) -> None:
        self.node_id = node_id
        self.mailboxes: set[Mailbox] = set()
        self.coalesced_by_gone = 0
        self._cache = cache
        self._fetch_order = fetch_order
        self._max_pending = max_pending
        self._orders: TTLCache[str, Json] = TTLCache(maxsize=10_000, ttl=5)
        self._refreshing: dict[str, bool] = {}  # order id -> changed again meanwhile
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def coalesced(self) -> int:
        return self.coalesced_by_gone + sum(box.coalesced for box in self.mailboxes)

    def join(self, skus: frozenset[str] | None) -> Mailbox:
        mailbox = Mailbox(skus, self._max_pending)
        self.mailboxes.add(mailbox)
        return mailbox

    def leave(self, mailbox: Mailbox) -> None:
        self.coalesced_by_gone += mailbox.coalesced
        self.mailboxes.discard(mailbox)

    def snapshot(self, mailbox: Mailbox) -> Json:
        products = [p for p in self._cache.all() if mailbox.wants(p["sku"])]
        return {"type": "snapshot", "node": self.node_id, "products": products}

    def on_change(self, change: Json, outcome: Outcome, source: str) -> None:
        """A `Sync` listener: every change the cache took goes out."""
        if outcome is not Outcome.STALE:
            self.broadcast(change)

    def broadcast(self, change: Json) -> None:
        for mailbox in self.mailboxes:
            mailbox.offer(change)
        order_id = change.get("order_id")
        if order_id and any(order_id in box.orders for box in self.mailboxes):
            self._spawn(self._push_order(order_id))

    def resync_all(self) -> None:
        for mailbox in self.mailboxes:
            mailbox.resnapshot()

    async def follow(self, mailbox: Mailbox, order_id: UUID) -> None:
        mailbox.orders.add(str(order_id))
        try:
            order = await self._order(str(order_id))
        except AppError as exc:
            mailbox.orders.discard(str(order_id))
            mailbox.say({"type": "error", "code": exc.code, "message": exc.message})
            return
        mailbox.say({"type": "order", "order": order})

    async def _order(self, order_id: str) -> Json:
        if (order := self._orders.get(order_id)) is None:
            order = self._orders[order_id] = await self._fetch_order(UUID(order_id))
        return order

    async def _push_order(self, order_id: str) -> None:
        """Send followers the order as it is now; refetch if it changes meanwhile."""
        if order_id in self._refreshing:
            self._refreshing[order_id] = True
            return
        self._refreshing[order_id] = False
        try:
            while True:
                self._orders.pop(order_id, None)
                order = await self._order(order_id)
                for mailbox in self.mailboxes:
                    if order_id in mailbox.orders:
                        mailbox.say({"type": "order", "order": order})
                if not self._refreshing[order_id]:
                    return
                self._refreshing[order_id] = False
        except AppError as exc:
            log.warning("could not refresh order %s: %s", order_id, exc)
        finally:
            del self._refreshing[order_id]

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
