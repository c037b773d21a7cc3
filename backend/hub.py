"""Fans applied changes out to this node's WebSocket clients.

Offering a change to a client never waits: each client has a mailbox holding
the latest change per SKU (older ones are coalesced away) and a few control
messages, so a client that stops reading holds at most one entry per SKU and
slows nobody; when it reads again it gets the latest state.

Fan-out is the hot path: a change goes to every client, so it is encoded once
per node, and the changes applied together (an order's lines, a burst the bus
listener drained at once) go out as one frame, a `batch`, built once per node
and once per distinct SKU filter: a client that keeps up costs one pointer and
one send per burst, whatever the burst holds. Only a client that has fallen
behind gets its own frame, of the latest change per SKU. The full snapshot is
encoded once per catalog state. Everything in a mailbox is wire-ready text.
"""

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cachetools import TTLCache

from backend.backoff import Backoff
from backend.cache import Outcome, StockCache
from backend.documents import Change, Json, Order, OrderEvent
from backend.errors import AppError

if TYPE_CHECKING:
    from backend.tracing import Tracing

log = logging.getLogger(__name__)

OrderFetcher = Callable[[UUID], Awaitable[Order]]

_PUSH_TRIES = 20  # reads of a followed order before giving up on one change (~1.5 min)
MAX_CONTROL = 64  # control messages a client that does not read can hold
SERVICE_RESTART = 1012  # the WebSocket close code for "reconnect": a restart, a lifetime
MAX_BATCH = 200  # changes in one frame (~100 KB): a client's default 1 MiB limit holds it


def encode(message: Json) -> str:
    return json.dumps(message, separators=(",", ":"))


def error(code: str, message: str) -> str:
    return encode({"type": "error", "code": code, "message": message})


def reconnect(reason: str) -> str:
    return encode({"type": "reconnect", "reason": reason})


PING = encode({"type": "ping"})
PONG = encode({"type": "pong"})


def frames(texts: list[str]) -> list[str]:
    """Encoded messages as frames: one alone as itself, more as `batch`es of MAX_BATCH."""
    chunks = [texts[i : i + MAX_BATCH] for i in range(0, len(texts), MAX_BATCH)]
    return [
        chunk[0] if len(chunk) == 1 else '{"type":"batch","messages":[' + ",".join(chunk) + "]}"
        for chunk in chunks
    ]


class Burst:
    """Changes applied together, each as (SKU, encoded message), and their frames.

    Built once per node, and once per SKU filter that keeps some of them.
    """

    __slots__ = ("frames", "items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items
        self.frames = frames([text for _, text in items])

    def only(self, skus: frozenset[str]) -> "Burst | None":
        """The part a client filtered to `skus` wants: this one, a smaller one, or none."""
        kept = [item for item in self.items if item[0] in skus]
        if len(kept) == len(self.items):
            return self
        return Burst(kept) if kept else None


class Mailbox:
    """What one client has yet to receive. Slots: thousands of these may be idle."""

    __slots__ = (
        "_burst",
        "_control",
        "_max_pending",
        "_on_news",
        "_resnapshot",
        "_stock",
        "_waiter",
        "address",
        "close_code",
        "closing",
        "coalesced",
        "orders",
        "skus",
    )

    def __init__(
        self, skus: frozenset[str] | None, max_pending: int, address: str | None = None
    ) -> None:
        self.skus = skus
        self.address = address
        self.orders: set[str] = set()
        self.coalesced = 0
        self.closing = False  # no more news: the farewell, if any, is the last message
        self.close_code: int | None = None  # None: the client is gone, nothing to close
        self._max_pending = max_pending
        self._burst: Burst | None = None  # the one burst to send, while keeping up
        self._stock: dict[str, str] = {}  # behind: SKU -> its latest change, encoded
        self._control: list[str] = []
        self._resnapshot = False
        self._waiter: asyncio.Future[None] | None = None
        self._on_news: Callable[[], None] | None = None

    @property
    def pending(self) -> int:
        burst = len(self._burst.items) if self._burst is not None else 0
        return burst + len(self._stock) + len(self._control)

    def wants(self, sku: str) -> bool:
        return self.skus is None or sku in self.skus

    def offer(self, burst: Burst) -> None:
        """Queue a burst of changes this client wants; a fresh snapshot already on its
        way makes it moot.

        A client that has taken everything holds the shared burst as it is. One
        that has not yet taken the last one is behind: from then on it holds the
        latest change per SKU, and gets them in frames of its own.
        """
        if self._resnapshot or self.closing:
            return
        if self._burst is None and not self._stock:
            self._burst = burst
        else:
            if self._burst is not None:
                held, self._burst = self._burst, None
                self._coalesce(held.items)
            self._coalesce(burst.items)
        self._wake()

    def _coalesce(self, items: list[tuple[str, str]]) -> None:
        stock = self._stock
        for sku, text in items:
            if sku in stock:
                self.coalesced += 1
            elif len(stock) >= self._max_pending:
                # Too far behind to be worth catching up change by change.
                self.coalesced += len(stock) + 1
                self.resnapshot()
                return
            stock[sku] = text

    def say(self, text: str) -> None:
        if self.closing:
            return
        if len(self._control) >= MAX_CONTROL:
            del self._control[0]  # the oldest news of a client that does not read
        self._control.append(text)
        self._wake()

    def resnapshot(self) -> None:
        """The client gets the whole (filtered) catalog as it is when it next reads."""
        self._stock.clear()
        self._burst = None
        self._resnapshot = True
        self._wake()

    def finish(self, code: int | None = None, farewell: str | None = None) -> None:
        """End the conversation: send `farewell` and close with `code` (the first call wins).

        Without a code the client is gone already: its sender just stops.
        """
        if self.closing:
            return
        if farewell is not None:
            self.say(farewell)
        self.closing, self.close_code = True, code
        self._stock.clear()
        self._burst = None
        self._resnapshot = False
        self._wake()

    @property
    def has_news(self) -> bool:
        return bool(self._resnapshot or self._burst or self._stock or self._control or self.closing)

    def on_news(self, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever news arrives, instead of waking a `take`: a client's
        sender then runs only while there is something to send."""
        self._on_news = callback
        if self.has_news:
            callback()

    async def take(self) -> tuple[bool, list[str]]:
        """Wait for news; return (send a fresh snapshot first?, frames to send)."""
        while not self.has_news:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take_now()

    def take_now(self) -> tuple[bool, list[str]]:
        """What there is now: (send a fresh snapshot first?, frames to send)."""
        snapshot, self._resnapshot = self._resnapshot, False
        texts = self._control
        self._control = []
        if self._burst is not None:
            texts += self._burst.frames
            self._burst = None
        elif self._stock:
            texts += frames(list(self._stock.values()))
            self._stock = {}
        return snapshot, texts

    def _wake(self) -> None:
        if self._on_news is not None:
            self._on_news()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Hub:
    def __init__(
        self, node_id: str, cache: StockCache, fetch_order: OrderFetcher, max_pending: int
    ) -> None:
        self.node_id = node_id
        self.mailboxes: dict[Mailbox, None] = {}  # ordered: longest connected first
        self.coalesced_by_gone = 0
        self.closing = False  # shutting down: no new clients
        self._cache = cache
        self._fetch_order = fetch_order
        self._max_pending = max_pending
        self._followers: dict[str, set[Mailbox]] = {}  # order id -> mailboxes following it
        self._orders: TTLCache[str, Order] = TTLCache(maxsize=10_000, ttl=5)
        self._refreshing: dict[str, bool] = {}  # order id -> changed again meanwhile
        self._snapshot: str | None = None  # the unfiltered snapshot, encoded
        self._filtered: dict[frozenset[str], str] = {}  # filter -> its snapshot, encoded
        self._ready: list[tuple[str, str]] = []  # changes applied since the last flush
        self._flushing: asyncio.Handle | None = None
        self._per_address: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._emptied: asyncio.Event | None = None
        self.tracing: Tracing | None = None  # set by backend.tracing when traces are on

    @property
    def coalesced(self) -> int:
        return self.coalesced_by_gone + sum(box.coalesced for box in self.mailboxes)

    def admits(self, address: str, most: int) -> bool:
        """Whether one more client from `address` fits under `most` at once."""
        return self._per_address[address] < most

    def join(self, skus: frozenset[str] | None, address: str | None = None) -> Mailbox:
        """A mailbox for a new client; its first news is a snapshot."""
        mailbox = Mailbox(skus, self._max_pending, address)
        mailbox.resnapshot()
        self.mailboxes[mailbox] = None
        if address is not None:
            self._per_address[address] += 1
        return mailbox

    def leave(self, mailbox: Mailbox) -> None:
        if mailbox not in self.mailboxes:
            return
        del self.mailboxes[mailbox]
        if mailbox.address is not None:
            self._per_address[mailbox.address] -= 1
            if not self._per_address[mailbox.address]:
                del self._per_address[mailbox.address]
        self.coalesced_by_gone += mailbox.coalesced
        for order_id in mailbox.orders:
            self._unfollow(mailbox, order_id)
        if not self.mailboxes and self._emptied is not None:
            self._emptied.set()

    def snapshot(self, mailbox: Mailbox) -> str:
        """The snapshot this client wants, encoded once per catalog state and filter."""
        skus = mailbox.skus
        if skus is not None:
            if (text := self._filtered.get(skus)) is None:
                products = [p for p in self._cache.all() if p["sku"] in skus]
                text = encode({"type": "snapshot", "node": self.node_id, "products": products})
                self._filtered[skus] = text
            return text
        if self._snapshot is None:
            products = self._cache.all()
            self._snapshot = encode(
                {"type": "snapshot", "node": self.node_id, "products": products}
            )
        return self._snapshot

    def on_change(self, change: Change, outcome: Outcome, source: str) -> None:
        """A `Sync` listener: every change the cache took goes out.

        A stale change still tells of its order: stock changes of one product
        from two nodes may arrive out of order, and the one that loses may be
        the only news of that order's new status.
        """
        if outcome is not Outcome.STALE:
            self.broadcast(change)
        elif (order_id := change["order_id"]) and order_id in self._followers:
            self._spawn(self._push_order(order_id))

    def broadcast(self, change: Change) -> None:
        """Encode the change now; it goes out with whatever else is applied before the
        event loop's next turn (`flush`)."""
        self._forget_snapshots()
        self._ready.append((change["sku"], encode({"type": "stock", **change})))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().call_soon(self.flush)
        order_id = change["order_id"]
        if order_id and order_id in self._followers:
            self._spawn(self._push_order(order_id))

    def flush(self) -> None:
        """Offer the changes applied together to every client, as one burst each.

        With tracing on, the push is a span of the trace whose change asked for
        it first (`call_soon` runs this in the context it was called from).
        """
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if not self._ready:
            return
        burst = Burst(self._ready)
        self._ready = []
        if self.tracing is not None:
            clients = len(self.mailboxes)
            attributes = {"orderflow.changes": len(burst.items), "orderflow.clients": clients}
            with self.tracing.within("push", lambda: attributes):
                self._offer(burst)
            return
        self._offer(burst)

    def _offer(self, burst: Burst) -> None:
        filtered: dict[frozenset[str], Burst | None] = {}
        for mailbox in self.mailboxes:
            skus = mailbox.skus
            if skus is None:
                mailbox.offer(burst)
                continue
            if skus in filtered:
                part = filtered[skus]
            else:
                part = filtered[skus] = burst.only(skus)
            if part is not None:
                mailbox.offer(part)

    def _forget_snapshots(self) -> None:
        self._snapshot = None
        if self._filtered:
            self._filtered = {}

    def resync_all(self) -> None:
        """After a full reload: fresh snapshots, and every followed order read again
        (the changes that would have told of them may be what was lost)."""
        self._forget_snapshots()
        self._ready = []  # the snapshots hold them
        for mailbox in self.mailboxes:
            mailbox.resnapshot()
        for order_id in list(self._followers):
            self._spawn(self._push_order(order_id))

    async def follow(
        self, mailbox: Mailbox, order_id: UUID, most: int, customer_id: str | None = None
    ) -> None:
        """Send the order now and on every change, to at most `most` orders per client.

        With `customer_id`, only that customer's order: another's is NOT_FOUND,
        as a missing one. The first read is fresh, never the short-lived cache.
        """
        key = str(order_id)
        if key not in mailbox.orders and len(mailbox.orders) >= most:
            mailbox.say(error("TOO_MANY_FOLLOWS", f"follow at most {most} orders at once"))
            return
        mailbox.orders.add(key)
        self._followers.setdefault(key, set()).add(mailbox)
        try:
            self._orders.pop(key, None)
            order = await self._order(key)
            if customer_id is not None and order["customer_id"] != customer_id:
                raise AppError(404, "NOT_FOUND", "no such order", {"order_id": key})
        except AppError as exc:
            self.unfollow(mailbox, order_id)
            mailbox.say(error(exc.code, exc.message))
            return
        mailbox.say(encode({"type": "order", "order": order}))

    def follows(self, order_id: str) -> bool:
        """Whether any client here follows the order (the events tail asks, per entry)."""
        return order_id in self._followers

    def order_event(self, event: OrderEvent) -> None:
        """An order's event off the stream (`backend.events.tail`), to the clients that
        follow that order here, encoded once. Following already checked who may."""
        order_id = event["order_id"]
        if order_id is None or not (followers := self._followers.get(order_id)):
            return
        shown = {
            key: value for key, value in event.items() if key != "webhooks"
        }  # the relay's mark
        text = encode({"type": "order_event", "event": shown})
        for mailbox in followers:
            mailbox.say(text)

    def unfollow(self, mailbox: Mailbox, order_id: UUID) -> None:
        key = str(order_id)
        mailbox.orders.discard(key)
        self._unfollow(mailbox, key)

    def _unfollow(self, mailbox: Mailbox, order_id: str) -> None:
        followers = self._followers.get(order_id)
        if followers is not None:
            followers.discard(mailbox)
            if not followers:
                del self._followers[order_id]

    async def shutdown(self, within: float) -> None:
        """Tell every client to reconnect elsewhere, close each with 1012, and refuse
        new ones; return when all are gone, or after `within` seconds."""
        self.closing = True
        farewell = reconnect("shutdown")
        for mailbox in list(self.mailboxes):
            mailbox.finish(SERVICE_RESTART, farewell)
        if not self.mailboxes:
            return
        self._emptied = asyncio.Event()
        try:
            async with asyncio.timeout(within):
                await self._emptied.wait()
        except TimeoutError:
            log.info("%d WebSocket client(s) still open after %.1fs", len(self.mailboxes), within)

    async def _order(self, order_id: str) -> Order:
        if (order := self._orders.get(order_id)) is None:
            order = self._orders[order_id] = await self._fetch_order(UUID(order_id))
        return order

    async def _push_order(self, order_id: str) -> None:
        """Send followers the order as it is now; refetch if it changes meanwhile.

        A read that fails (the database is away) is tried again with backoff
        for a while: the change that asked for it will not come again.
        """
        if order_id in self._refreshing:
            self._refreshing[order_id] = True
            return
        self._refreshing[order_id] = False
        backoff = Backoff(first=0.2, most=5.0)
        try:
            for _ in range(_PUSH_TRIES):
                try:
                    self._orders.pop(order_id, None)
                    text = encode({"type": "order", "order": await self._order(order_id)})
                except AppError as exc:
                    log.warning("could not refresh order %s: %s", order_id, exc)
                    await asyncio.sleep(backoff.delay(0.0))
                    continue
                for mailbox in self._followers.get(order_id, ()):
                    mailbox.say(text)
                if not self._refreshing[order_id]:
                    return
                self._refreshing[order_id] = False
        finally:
            del self._refreshing[order_id]

    def _spawn(self, job: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
