"""What a consumer group on the events stream is: a name, a filter and a handler.

The stream delivers at least once (a relay may re-send, a dead consumer's
entries are claimed by another), so every effect of `handle` must be idempotent
by `event_id`: the SQL functions check `processed_events` for exactly that.

The filter is asked twice: `might_want` on an entry's plain hints, so that the
runner acks what the consumer cannot want without unsealing it, and `wants` on
the sealed event, which alone decides whether it is handled. Each consumer's
`wants` is its `might_want` of the event's own hints, so the two cannot drift.
"""

from typing import Protocol

from backend.documents import OrderEvent
from backend.events.stream import Hints


class Consumer(Protocol):
    """One consumer group on the events stream. Any node may run it; every
    effect must be idempotent by event_id (a redelivery changes nothing)."""

    name: str  # the group name, and the `consumer` in processed_events

    def might_want(self, hints: Hints) -> bool:
        """False only if no event with these hints is wanted (they may be forged:
        True never means it will be handled)."""
        ...

    def wants(self, event: OrderEvent) -> bool: ...

    async def handle(self, event: OrderEvent, attempt: int) -> None:
        """Raise to have it retried (attempt is 1-based); after
        WORKER_MAX_ATTEMPTS it goes to the dead letters."""
        ...
