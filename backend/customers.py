"""Signed-in customers, remembered in `customers` the first time a node sees them order.

Placing an order is the hot path: a node remembers (in a bounded LRU) which
customers it has already written, so a regular customer costs one upsert per
node, not one per order. Forgetting one only costs another upsert, which
changes nothing that was already known.
"""

import logging
from collections import OrderedDict

from backend.errors import AppError
from database import Database

log = logging.getLogger(__name__)


class KnownCustomers:
    def __init__(self, db: Database, size: int = 10_000) -> None:
        self._db = db
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def remember(self, customer_id: str, email: str | None) -> None:
        """Upsert the customer unless this node already did. A failure is logged and
        tried again at their next order: the order they placed stands either way."""
        if customer_id in self._seen:
            self._seen.move_to_end(customer_id)
            return
        try:
            await self._db.upsert_customer(customer_id, email, None)
        except AppError as exc:
            log.warning("customer %s not remembered: %s", customer_id, exc)
            return
        self._seen[customer_id] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
