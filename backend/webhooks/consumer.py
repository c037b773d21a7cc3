"""The webhooks consumer: each event POSTed, signed, to every endpoint that wants its type.

`webhook_deliveries_for` makes the event's deliveries once (one per enabled
endpoint subscribed to its type) and answers the ones still pending, so a
delivery that succeeded is never sent again, however often the event comes
back. Each attempt is recorded: 2xx is `delivered`; anything else (another
status, a redirect, a timeout, a refused connection) stays `pending` and the
handler raises, for the stream to retry the event with backoff; on the last
attempt it is `dead` and the stream dead-letters the event.

The body is the event as JSON; headers name the event type, the delivery (a
receiver's idempotency key: a retried delivery keeps its id) and the signature
(`backend.webhooks.signing`).
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import httpx

from backend.documents import Json, OrderEvent
from backend.events.stream import Hints
from backend.webhooks.signing import HEADER, signature

if TYPE_CHECKING:
    from backend.node import Node

log = logging.getLogger(__name__)

USER_AGENT = "OrderFlow-Webhooks/1"


class DeliveryFailed(Exception):
    """Some endpoints did not take the event; the stream retries it."""


@dataclass(frozen=True)
class Attempt:
    delivery: Json
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookConsumer:
    name = "webhooks"

    def __init__(self, node: "Node") -> None:
        self.db = node.db
        self.settings = node.settings
        self._http: httpx.AsyncClient | None = None

    def might_want(self, hints: Hints) -> bool:
        # The relay marks each event with whether an enabled endpoint wanted its
        # type when it was relayed; an event without the mark is asked about in SQL.
        return hints.hooks is not False

    def wants(self, event: OrderEvent) -> bool:
        return self.might_want(Hints.of(event))

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        owed = await self.db.webhook_deliveries_for(UUID(event["event_id"]), event["type"])
        if not owed:
            return
        body = json.dumps(event, separators=(",", ":"), default=str).encode()
        attempts = await asyncio.gather(*(self._post(d, event["type"], body) for d in owed))
        last = attempt >= self.settings.worker_max_attempts
        failed = [a for a in attempts if not a.ok]
        for done in attempts:
            status = "delivered" if done.ok else "dead" if last else "pending"
            await self.db.record_webhook_attempt(
                UUID(done.delivery["id"]), status, done.status_code, done.error
            )
        if failed:
            raise DeliveryFailed(
                f"{len(failed)} of {len(attempts)} webhook deliveries failed"
                f" (attempt {attempt}{', the last' if last else ''}): "
                + "; ".join(f"{a.delivery['url']}: {a.error}" for a in failed)
            )

    async def _post(self, delivery: Json, event_type: str, body: bytes) -> Attempt:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "OrderFlow-Event": event_type,
            "OrderFlow-Delivery": str(delivery["id"]),
            HEADER: signature(str(delivery["secret"]), body),
        }
        try:
            response = await self._client().post(
                str(delivery["url"]), content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            return Attempt(delivery, None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= response.status_code < 300:
            return Attempt(delivery, response.status_code, None)
        return Attempt(delivery, response.status_code, f"answered {response.status_code}")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_seconds, follow_redirects=False
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
