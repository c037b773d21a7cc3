"""The one path of a change: write in Postgres, then apply and publish what changed.

Routers call a `Store` method; it calls the SQL function, hands the committed
changes to this node's `Sync` (the same code that applies other nodes'
changes) and to the bus. A failed publish never fails the write: the other
nodes' ledger catch-up delivers the change anyway. Orders go through group
commit (`backend.batches`): the orders that arrive while a call is in flight
are placed together in the next call of `place_orders`, and the changes of a
whole batch are applied and published at once.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from uuid import UUID

from backend.batches import SHARED_FAILURES, Batcher
from backend.customers import KnownCustomers
from backend.documents import Change, Json, OrderRequest, Written
from backend.errors import AppError
from backend.settings import Settings
from backend.sync import Sync
from database import Database

Publisher = Callable[[Sequence[Change]], None]


class Store:
    def __init__(self, db: Database, sync: Sync, settings: Settings) -> None:
        self.db = db
        self.sync = sync
        self.node = settings.node_id
        self._settings = settings
        self.publish: Publisher | None = None  # the bus, when the node has one
        self.counts: Counter[str] = Counter()  # "order:<outcome>", "stock:<reason>"
        self.customers = KnownCustomers(db)  # signed-in customers this node has written
        self.orders: Batcher[OrderRequest, Written] = Batcher(
            self._place_batch,
            settings.order_batch_max,
            settings.order_batch_calls,
            keys=_skus,  # orders of one SKU wait for each other's batch, not its row lock
        )

    def _committed(self, result: Written) -> Written:
        self._apply(result["changes"])
        return result

    def _apply(self, changes: list[Change]) -> None:
        if changes:
            self.counts.update(f"stock:{change['reason']}" for change in changes)
            self.sync.apply(changes, "local")
            if self.publish is not None:
                self.publish(changes)

    async def create_product(
        self, sku: str, name: str, price_cents: int, on_hand: int, low_stock_threshold: int
    ) -> Written:
        return self._committed(
            await self.db.create_product(
                sku, name, price_cents, on_hand, low_stock_threshold, self.node
            )
        )

    async def update_product(
        self,
        sku: str,
        name: str | None,
        price_cents: int | None,
        low_stock_threshold: int | None,
        expected_version: int | None,
    ) -> Written:
        return self._committed(
            await self.db.update_product(
                sku, self.node, name, price_cents, low_stock_threshold, expected_version
            )
        )

    async def delete_product(self, sku: str) -> Written:
        return self._committed(await self.db.delete_product(sku, self.node))

    async def adjust_stock(self, sku: str, delta: int, reason: str) -> Written:
        return self._committed(await self.db.adjust_stock(sku, delta, reason, self.node))

    async def set_stock(self, sku: str, on_hand: int, expected_version: int | None) -> Written:
        return self._committed(await self.db.set_stock(sku, on_hand, expected_version, self.node))

    async def place_order(
        self,
        items: Sequence[Json],
        customer_id: str | None,
        idempotency_key: str | None,
        caller: str | None = None,
        payment_method: str | None = None,
    ) -> Written:
        """`caller` owns the idempotency key: another caller's key is another order."""
        request = OrderRequest(
            items=list(items),
            customer_id=customer_id,
            idempotency_key=idempotency_key,
            caller=caller,
            payment_method=payment_method,
        )
        return await self.orders.submit(request)

    async def _place_batch(self, requests: Sequence[OrderRequest]) -> list[Written | AppError]:
        settings = self._settings
        try:
            outcomes = await self.db.place_orders(
                requests,
                self.node,
                settings.hold_seconds,
                settings.fee_bps,
                settings.max_order_lines,
            )
        except AppError as exc:
            if len(requests) == 1 or exc.code in SHARED_FAILURES:  # else placed one by one next
                self.counts[f"order:{exc.code.lower()}"] += len(requests)
            raise
        changes: list[Change] = []
        for outcome in outcomes:
            if isinstance(outcome, AppError):
                self.counts[f"order:{outcome.code.lower()}"] += 1
            else:
                self.counts["order:replayed" if outcome["replayed"] else "order:placed"] += 1
                changes.extend(outcome["changes"])
        self._apply(changes)
        return outcomes

    async def confirm_order(self, order_id: UUID) -> Written:
        return self._committed(await self.db.confirm_order(order_id, self.node))

    async def cancel_order(self, order_id: UUID, customer_id: str | None = None) -> Written:
        """With `customer_id`, only that customer's order (another's is NOT_FOUND)."""
        return self._committed(
            await self.db.cancel_order(order_id, self.node, customer_id=customer_id)
        )

    async def expire_holds(self) -> Written:
        return self._committed(await self.db.expire_holds(self._settings.sweep_batch, self.node))

    async def record_payment(
        self,
        order_id: UUID,
        outcome: str,
        *,
        consumer: str,
        event_id: UUID,
        ref: str | None,
        detail: str | None = None,
    ) -> Written:
        """Paid sells the held units, declined releases them; once per (consumer, event)."""
        return self._committed(
            await self.db.record_payment(
                order_id, outcome, consumer, event_id, ref, self.node, detail
            )
        )

    async def refund_order(
        self,
        order_id: UUID,
        items: Sequence[Json] | None,
        restock: bool,
        reason: str,
        idempotency_key: str | None,
        caller: str | None,
    ) -> Written:
        """Restocked units come back through the ledger (reason `return`)."""
        return self._committed(
            await self.db.refund_order(
                order_id, items, restock, reason, idempotency_key, caller, self.node
            )
        )


def _skus(request: OrderRequest) -> set[str]:
    return {str(item.get("sku")) for item in request["items"]}
