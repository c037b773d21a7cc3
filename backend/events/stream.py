"""The events stream in Redis: its keys, and what one entry holds.

An entry is `{"event": <the OrderEvent's JSON, sealed>}` (`backend.seal`, the
nodes' BUS_KEY): anyone who can write to Redis could otherwise add an
`order.placed` of their own making, and the payment worker would act on it.
A replayed dead letter also carries `"for": <group>`, so that only the group
that failed it handles it again; every other group acks it at once.

Beside the seal, an entry carries plain hints for its readers: the event's
`type`, its `order` id (when it has one) and `hooks` (`1` or `0`: whether an
enabled webhook endpoint wanted its type when it was relayed; absent when the
event does not say). Every node's consumer groups and tail read every entry,
and most are of no use to most readers: the hints let a reader pass over an
entry without checking its seal or decoding it. They serve only for skipping:
a reader that acts on an entry unseals it and decides on the sealed event, so
a forged hint can at most make a reader skip an entry, which anyone able to
write to Redis could do anyway by deleting it. An entry without hints (added
by a node from before them) is unsealed and decided on as a whole.
"""

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import redis.asyncio as redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from backend.documents import OrderEvent
from backend.seal import seal, unseal

STREAM = "order_events"
ENTRY_FIELD = b"event"
FOR_FIELD = b"for"
TYPE_FIELD = b"type"
ORDER_FIELD = b"order"
HOOKS_FIELD = b"hooks"

Fields = dict[FieldT, EncodableT]


class Hints(NamedTuple):
    """What a reader may know of an event without unsealing it: enough to tell
    that it does not want it, never enough to act on it."""

    type: str
    order_id: str | None
    hooks: bool | None  # None: the event does not say (the relay did not mark it)

    @classmethod
    def of(cls, event: OrderEvent) -> "Hints":
        """The hints the event itself gives (what its entry carries)."""
        return cls(event["type"], event["order_id"], event.get("webhooks"))

    @classmethod
    def read(cls, fields: Mapping[bytes, bytes]) -> "Hints | None":
        """The entry's hints, or None if it has none (then only its sealed event says)."""
        kind = fields.get(TYPE_FIELD)
        if kind is None:
            return None
        order = fields.get(ORDER_FIELD)
        hooks = fields.get(HOOKS_FIELD)
        return cls(
            kind.decode(),
            None if order is None else order.decode(),
            None if hooks is None else hooks == b"1",
        )


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop.

    redis-py (8.1) sometimes loses a task's cancellation that lands while a
    stream command's reply arrives: the command returns, or fails as a closed
    connection, and the task runs on. A loop that talks to Redis calls this
    after each round, so that stopping a node never hangs on it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class EventStream:
    """The stream and its dead-letter stream on one Redis, sealing with one key."""

    redis: redis.Redis
    key: bytes
    prefix: str = ""
    maxlen: int = 100_000

    @property
    def name(self) -> str:
        return f"{self.prefix}{STREAM}"

    @property
    def dead(self) -> str:
        return f"{self.prefix}{STREAM}:dead"

    def encode(self, event: OrderEvent, group: str | None = None) -> Fields:
        fields: Fields = {
            ENTRY_FIELD: seal(json.dumps(event, separators=(",", ":")), self.key).encode(),
            TYPE_FIELD: event["type"].encode(),
        }
        if (order_id := event["order_id"]) is not None:
            fields[ORDER_FIELD] = order_id.encode()
        if (hooks := event.get("webhooks")) is not None:
            fields[HOOKS_FIELD] = b"1" if hooks else b"0"
        if group is not None:
            fields[FOR_FIELD] = group.encode()
        return fields

    def decode(self, fields: Mapping[bytes, bytes]) -> OrderEvent | None:
        """The entry's event, or None if its seal is missing or wrong (or it is not one)."""
        text = unseal(fields.get(ENTRY_FIELD, b""), self.key)
        if text is None:
            return None
        try:
            event = json.loads(text)
        except ValueError:
            return None
        if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
            return None
        return cast(OrderEvent, event)

    async def add(self, events: Sequence[OrderEvent], group: str | None = None) -> list[str]:
        """XADD the events in their order, in one round trip; their entry ids."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    self.name, self.encode(event, group), maxlen=self.maxlen, approximate=True
                )
            ids = await pipe.execute()
        return [entry_id.decode() for entry_id in ids]

    async def create_group(self, group: str, start: str = "$") -> bool:
        """Create the group (and the stream) unless it exists; whether it was created."""
        try:
            await self.redis.xgroup_create(self.name, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True
