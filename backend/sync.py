"""Keeps a node's cache converged with the ledger.

Changes reach a node three ways: its own writes, the bus, and the periodic
catch-up from the ledger. All three go through `apply`, which keeps only what
is newer. The catch-up bounds staleness even when every bus message is lost.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from backend.cache import Outcome, StockCache
from backend.documents import Change, ChangePage, MarkPage
from backend.errors import AppError
from database import Database

if TYPE_CHECKING:
    from backend.tracing import Tracing

log = logging.getLogger(__name__)

Listener = Callable[[Change, Outcome, str], None]

# A bus message this many versions ahead of what a node holds is not believed
# until the database confirms it: someone with the bus key could otherwise
# freeze a product at any figures.
FAR_AHEAD = 1000

# A change that arrives ahead of a version still on its way (two nodes
# published one product's changes, and the later one came first) waits this
# long for the missing one, so that clients get every version in order
# rather than the later one and never the earlier.
HOLD_SECONDS = 0.05


class Sync:
    def __init__(self, db: Database, cache: StockCache, *, page_size: int = 1000) -> None:
        self.db = db
        self.cache = cache
        self.page_size = page_size
        self.cursor: str | None = None
        self.resyncs = 0
        self.rereads = 0
        self.doubted = 0  # bus changes too far ahead to take on trust
        self._listeners: list[Listener] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self._watched: list[Callable[[str], bool]] = []
        self._rereads: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = asyncio.Lock()  # one reader of the ledger at a time: one cursor
        self._held: dict[str, list[tuple[Change, str]]] = {}  # early changes, by SKU
        self.held = 0  # changes that arrived early and waited for the one before
        self.tracing: Tracing | None = None  # set by backend.tracing when traces are on

    def listen(self, listener: Listener) -> None:
        """Call `listener(change, outcome, source)` for every change offered."""
        self._listeners.append(listener)

    def watch_orders(self, follows: Callable[[str], bool]) -> None:
        """Ledger rows of an order `follows(order_id)` says is watched are offered by the
        catch-up even when the cache holds them: a stale change still tells of its order
        (`Hub.on_change`)."""
        self._watched.append(follows)

    def on_resync(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every full reload of the catalog."""
        self._resync_listeners.append(listener)

    def apply(self, changes: Iterable[Change], source: str) -> None:
        """Offer changes to the cache; a skipped version makes us re-read that product.

        A re-read's answer is the product's latest state, so its own jump over
        versions is expected and asks for nothing more; so is a node's own write
        (see `_offer`). With tracing on, an apply
        within a trace (a request's write, a received message) is a span of it.
        """
        if self.tracing is None:
            self._apply(changes, source)
            return
        changes = list(changes)
        with self.tracing.within("apply", lambda: _attributes(changes, source)):
            self._apply(changes, source)

    def _apply(self, changes: Iterable[Change], source: str) -> None:
        for change in changes:
            if source == "bus" and self.cache.jump(change) > FAR_AHEAD:
                self.doubted += 1
                self._reread(change["sku"])
                continue
            if source == "bus" and self.cache.early(change):  # a node's own writes show at once
                self._hold(change, source)
                continue
            self._offer(change, source)

    def _offer(self, change: Change, source: str) -> None:
        outcome = self.cache.apply(change)
        for listener in self._listeners:
            listener(change, outcome, source)
        # A re-read answers the latest state, so its own jump asks for nothing more;
        # nor does a node's own write: it held the product's lock to its commit, so
        # it is the latest state there was, and the versions it skipped are older.
        if outcome is Outcome.GAP and source not in ("reread", "local"):
            self._reread(change["sku"])
        if self._held.get(change["sku"]):
            self._release(change["sku"], expired=False)

    def _hold(self, change: Change, source: str) -> None:
        """Keep an early change until the versions before it arrive, or HOLD_SECONDS pass."""
        sku = change["sku"]
        waiting = self._held.setdefault(sku, [])
        if not waiting:
            asyncio.get_running_loop().call_later(HOLD_SECONDS, self._release, sku, True)
        waiting.append((change, source))
        waiting.sort(key=lambda held: (held[0]["product_id"], held[0]["version"]))
        self.held += 1

    def _release(self, sku: str, expired: bool) -> None:
        """Offer the held changes that are next in line; all of them once the wait is over
        (the first then skips versions, and a re-read fills in the latest state)."""
        waiting = self._held.get(sku)
        while waiting and (expired or not self.cache.early(waiting[0][0])):
            change, source = waiting.pop(0)
            self._offer(change, source)
            waiting = self._held.get(sku)
        if not waiting:
            self._held.pop(sku, None)

    async def resync(self) -> None:
        """Reload the whole catalog, then catch up from the snapshot's cursor."""
        async with self._reading:
            snapshot = await self.db.catalog_snapshot()
            self.cache.load(snapshot["products"], snapshot["tombstones"])
            self.cursor = snapshot["cursor"]
            self.resyncs += 1
            for listener in self._resync_listeners:
                listener()
            await self._catch_up()

    async def catch_up(self) -> int:
        """Apply the ledger rows after our cursor; return how many were read."""
        async with self._reading:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        """Page through the ledger up to the snapshot of the first page.

        Each page is applied and its cursor kept before the next is asked for,
        so a failure loses nothing and repeats nothing. Rows come in
        transaction order, which is not always a product's version order:
        sorting a page by version spares needless gap re-reads.

        A page is asked for in brief first (SKU, product, version, order): when
        the cache holds every row of it already (the bus brought them) and no
        row is of a watched order, there is nothing to apply and the cursor
        moves on; otherwise the same page is asked for in full. Under load the
        bus brings nearly everything, so the full pages are the exception.
        """
        read = 0
        while True:
            page: MarkPage | ChangePage = await self.db.stock_marks_since(
                self.cursor, self.page_size
            )
            if not all(self._holds(*mark) for mark in page["events"]):
                page = await self.db.stock_events_since(self.cursor, self.page_size)
                events = sorted(page["events"], key=lambda e: (e["product_id"], e["version"]))
                self.apply(events, "ledger")
            self.cursor = page["cursor"]
            read += len(page["events"])
            if not page["more"]:
                return read

    def _holds(self, sku: str, product_id: int, version: int, order_id: str | None) -> bool:
        """Whether the full row would change nothing here: stale, and of no watched order."""
        if not self.cache.holds(sku, product_id, version):
            return False
        return order_id is None or not any(follows(order_id) for follows in self._watched)

    async def run(self, interval: float, beat: Callable[[], None]) -> None:
        """Catch up every `interval` seconds; a failure ends it (the supervisor restarts it)."""
        while True:
            await asyncio.sleep(interval)
            await self.catch_up()
            beat()

    def _reread(self, sku: str) -> None:
        """A version was skipped: fetch the product itself, once at a time per SKU."""
        if sku in self._rereads:
            return
        self._rereads.add(sku)
        self.rereads += 1
        task = asyncio.get_running_loop().create_task(self._fetch(sku))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, sku: str) -> None:
        """The SKU's latest ledger row is its latest state, in the shape of a change."""
        try:
            page = await self.db.list_stock_events(sku, None, 1)
        except AppError as exc:
            log.warning("re-read of %s failed: %s", sku, exc)
            return
        finally:
            self._rereads.discard(sku)
        self.apply(page["items"], "reread")


def _attributes(changes: list[Change], source: str) -> dict[str, str | int]:
    """What an apply span says: where the changes came from, how many, and which
    product when there is one (a bus message's changes are applied one by one)."""
    attributes: dict[str, str | int] = {
        "orderflow.source": source,
        "orderflow.changes": len(changes),
    }
    if len(changes) == 1:
        sku, version = changes[0].get("sku"), changes[0].get("version")
        if isinstance(sku, str) and isinstance(version, int):  # a bus change is untrusted
            attributes["orderflow.sku"], attributes["orderflow.version"] = sku, version
    return attributes
