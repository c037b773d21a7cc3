"""The payment worker: charges each placed order through the provider and records
the outcome.

Recording goes through `Store.record_payment`, so the stock it sells or
releases reaches every node like any other change. The SQL function keeps
(consumer, event_id) in processed_events in the same transaction, so a
redelivered `order.placed` changes nothing; an order that stopped waiting for
payment (cancelled, expired, already paid) is not charged at all. A payment
that lands after the hold ran out is refunded at once by the same function.
"""

import logging
from typing import TYPE_CHECKING
from uuid import UUID

from backend.documents import OrderEvent
from backend.events.stream import Hints
from backend.payments.providers import ChargeRequest, PaymentProvider, provider_for

if TYPE_CHECKING:
    from backend.node import Node

log = logging.getLogger(__name__)


class PaymentConsumer:
    name = "payments"

    def __init__(self, node: "Node", provider: PaymentProvider | None = None) -> None:
        self.db = node.db
        self.store = node.store
        self.provider = provider or provider_for(node.settings)

    def might_want(self, hints: Hints) -> bool:
        return self.provider.charges and hints.type == "order.placed"

    def wants(self, event: OrderEvent) -> bool:
        return self.might_want(Hints.of(event))

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        """Charge the order once per event; a transient provider error is raised
        (`TransientPaymentError`) so that the stream retries it."""
        order_id = UUID(str(event["order_id"]))
        order = await self.db.get_order(order_id)
        if order["status"] != "pending" or order["paid_cents"] > 0:
            log.info("order %s is %s: not charged", order_id, order["status"])
            return
        event_id = UUID(event["event_id"])
        charge = await self.provider.charge(
            ChargeRequest(
                order_id=order_id,
                amount_cents=order["total_cents"],
                method=order["payment_method"],
                idempotency_key=event_id,
                attempt=attempt,
            )
        )
        if charge is None:
            return
        result = await self.store.record_payment(
            order_id,
            charge.outcome,
            consumer=self.name,
            event_id=event_id,
            ref=charge.ref,
            detail=charge.detail,
        )
        if not result.get("duplicate"):
            status = result["order"]["status"] if "order" in result else "?"
            log.info("order %s payment %s: %s", order_id, charge.outcome, status)
