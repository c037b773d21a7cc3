"""The notifications consumer: a receipt for each confirmed, cancelled, expired or
refunded order, stored and mailed to the customer, once per event.

Once, by the `notifications` row: `claim_notification` lets the first worker
through; `finish_notification` records the outcome (and writes
`notification.sent`). A worker that finds the event already claimed:

* `sent` or `skipped`: it is done; nothing to do.
* `sending`, claimed by this process, whose own attempt failed before the mail
  went out: send it now (the retry of its own failure).
* `sending`, claimed by this process, whose mail went out but whose finish
  failed: finish it, without sending again.
* `sending`, claimed elsewhere, less than WORKER_CLAIM_IDLE_SECONDS ago:
  another worker is at it (the same event delivered twice); raise, so the
  stream retries later, when it is finished.
* `sending`, claimed elsewhere and older than that: its worker died between its
  claim and its finish, the same rule the stream uses to take over a dead
  consumer's entries. Send again and finish.

So a mail goes out once in the normal course, and never zero times: the one
case of two mails is a worker that died after the server took its mail and
before it recorded so, and then both carry the same Message-ID.

A customer with no known email (or a node with no SMTP_URL) gets no mail: the
notification is `skipped`, its receipt still stored, and still once.
"""

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Literal
from uuid import UUID

from backend.documents import Json, Order, OrderEvent
from backend.events.stream import Hints
from backend.notify.mailer import Mailer, SmtpServer, message
from backend.notify.receipts import render
from backend.notify.storage import open_receipts

if TYPE_CHECKING:
    from backend.node import Node

log = logging.getLogger(__name__)

WANTED = frozenset({"order.confirmed", "order.cancelled", "order.expired", "order.refunded"})
_REMEMBERED = 1000  # this process's own unfinished claims it keeps track of

Progress = Literal["unsent", "sent"]


class NotificationBusy(Exception):
    """Another worker holds the event's claim and may be sending right now: retry later."""


class NotificationConsumer:
    name = "notifications"

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.settings = node.settings
        self.db = node.db
        self.receipts = open_receipts(node.settings)
        self.mailer = (
            Mailer(SmtpServer.from_url(self.settings.smtp_url), self.settings.mail_from)
            if self.settings.smtp_url
            else None
        )
        if self.mailer is None:
            log.warning("no SMTP_URL: receipts are stored, not mailed (notifications skipped)")
        # Claims this process made and has not finished, and how far it got.
        self._own: OrderedDict[UUID, Progress] = OrderedDict()
        self._busy: set[UUID] = set()  # events this process is handling right now

    def might_want(self, hints: Hints) -> bool:
        return hints.type in WANTED and hints.order_id is not None

    def wants(self, event: OrderEvent) -> bool:
        return self.might_want(Hints.of(event))

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        event_id = UUID(event["event_id"])
        if event_id in self._busy:
            raise NotificationBusy(f"notification for {event_id} is being sent by this worker")
        self._busy.add(event_id)
        try:
            await self._notify(event_id, UUID(str(event["order_id"])), event["type"])
        finally:
            self._busy.discard(event_id)

    async def _notify(self, event_id: UUID, order_id: UUID, event_type: str) -> None:
        order = await self.db.get_order(order_id)
        customer = await self._customer(order["customer_id"])
        recipient = (customer or {}).get("email") or None
        receipt = render(order, event_type, customer=customer, names=self._names(order))
        claim = await self.db.claim_notification(event_id, order_id, recipient, receipt.subject)
        if not claim["claimed"] and not self._may_go_on(event_id, claim):
            return
        progress = self._own.get(event_id, "unsent")
        self._remember(event_id, progress)
        ref = await self.receipts.put(order_id, receipt)
        status: Literal["sent", "skipped"] = "sent" if progress == "sent" else "skipped"
        if progress != "sent" and recipient is not None and self.mailer is not None:
            await self.mailer.send(message(receipt, self.mailer.sender, recipient, event_id))
            self._remember(event_id, "sent")
            status = "sent"
        await self.db.finish_notification(event_id, status, ref, self.settings.node_id)
        self._own.pop(event_id, None)

    def _may_go_on(self, event_id: UUID, claim: Json) -> bool:
        """An event claimed before: whether this worker carries on with it (see above)."""
        if claim.get("status") != "sending":
            self._own.pop(event_id, None)
            return False  # sent or skipped: done
        if event_id in self._own:
            return True  # this process's own claim: `_own` says how far it got
        age = float(claim.get("age_seconds") or 0.0)
        if age < self.settings.worker_claim_idle_seconds:
            raise NotificationBusy(f"notification for {event_id} claimed {age:.1f}s ago")
        log.warning(
            "notification for event %s claimed %.0fs ago and never finished: sending it again",
            event_id,
            age,
        )
        return True

    def _remember(self, event_id: UUID, progress: Progress) -> None:
        self._own[event_id] = progress
        self._own.move_to_end(event_id)
        while len(self._own) > _REMEMBERED:
            self._own.popitem(last=False)

    async def _customer(self, customer_id: str | None) -> Json | None:
        return None if customer_id is None else await self.db.get_customer(customer_id)

    def _names(self, order: Order) -> dict[str, str]:
        """Product names from this node's catalog cache: no database call per line."""
        names: dict[str, str] = {}
        for line in order["items"]:
            product = self.node.cache.get(line["sku"])
            if product is not None:
                names[line["sku"]] = product["name"]
        return names

    async def aclose(self) -> None:
        await self.receipts.aclose()
