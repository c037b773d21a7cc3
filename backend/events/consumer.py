"""What a consumer group on the events stream is: a name, a filter and a handler.

The stream delivers at least once (a relay may re-send, a dead consumer's
entries are claimed by another), so every effect of `handle` must be idempotent
by `event_id`: the SQL functions check `processed_events` for exactly that.
"""

from typing import Protocol

from backend.documents import OrderEvent


class Consumer(Protocol):
    """One consumer group on the events stream. Any node may run it; every
    effect must be idempotent by event_id (a redelivery changes nothing)."""

    name: str  # the group name, and the `consumer` in processed_events

    def wants(self, event: OrderEvent) -> bool: ...

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        """Raise to have it retried (attempt is 1-based); after
        WORKER_MAX_ATTEMPTS it goes to the dead letters."""
        ...
