"""Every node reads the whole events stream, to push each order's events to the
WebSocket clients following that order here.

No consumer group: a group hands each entry to one node, but the followers of an
order may be on any node, so each node reads every entry (XREAD from the stream's
end when it starts: a client that connects loads the timeline so far over HTTP,
and the live part from then on). Nothing is acked: after Redis was away the
read goes on from the last entry read, so a follower misses nothing the stream
still holds; the timeline over HTTP is the record either way. A replayed dead
letter (addressed to one group) is skipped: its event went out when it was
first added.

Most entries are of orders nobody here follows (and `stock.low` is of no
order): an entry whose plain hints (`backend.events.stream`) name an order
that no client on this node follows, or no order, is passed over without
checking its seal or decoding it. The clients' only use of the tail is their
followed orders' `order_event`s; everything else they see (the timeline so
far, the lifecycle panel) comes over HTTP. An entry without hints is unsealed
and its order asked about then.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from redis.exceptions import RedisError

from backend.backoff import Backoff
from backend.documents import OrderEvent
from backend.events.stream import FOR_FIELD, EventStream, Hints, stop_if_cancelled

log = logging.getLogger(__name__)

BATCH = 500  # entries read at a time: most are passed over on their hints
BLOCK_SECONDS = 1.0  # the longest blocking read: the loop beats at least this often
_WARN_EVERY = 30.0

Entry = tuple[bytes, Mapping[bytes, bytes]]


@dataclass
class TailStats:
    read: int = 0  # events unsealed off the stream
    skipped: int = 0  # entries passed over on their hints: of no order followed here
    rejected: int = 0  # entries whose seal was missing or wrong
    problem: str | None = None  # why the last read failed, until one succeeds


class Tail:
    """Reads the stream for `deliver`, which takes the events of the orders that
    `follows` (asked with an order id, cheaply and often) says someone here follows."""

    def __init__(
        self,
        stream: EventStream,
        deliver: Callable[[OrderEvent], None],
        follows: Callable[[str], bool],
    ) -> None:
        self.stats = TailStats()
        self._stream = stream
        self._deliver = deliver
        self._follows = follows
        self._last = "$"  # the id of the last entry read; `$` until the first
        self._warned_at = -_WARN_EVERY

    async def run(self, beat: Callable[[], None]) -> None:
        """Read until cancelled. Redis being away is waited out here, from where it
        stopped: entries added meanwhile are read once it answers again."""
        backoff = Backoff(first=0.1, most=5.0)
        since = time.monotonic()
        while True:
            beat()
            try:
                await self.read_once()
            except (RedisError, OSError) as exc:
                stop_if_cancelled()
                self._unavailable(exc)
                await asyncio.sleep(backoff.delay(uptime=time.monotonic() - since))
                since = time.monotonic()
                continue
            stop_if_cancelled()
            if self.stats.problem is not None:
                log.info("events tail: Redis answers again")
                self.stats.problem = None

    async def read_once(self) -> int:
        """One blocking read; how many events it delivered."""
        reply = await self._stream.redis.xread(
            {self._stream.name: self._last}, count=BATCH, block=int(BLOCK_SECONDS * 1000)
        )
        delivered = 0
        for _, entries in cast(list[tuple[bytes, list[Entry]]] | None, reply) or ():
            for raw_id, fields in entries:
                self._last = raw_id.decode()
                if FOR_FIELD in fields:
                    continue  # a replay for one group
                hints = Hints.read(fields)
                if hints is not None and not self._followed(hints.order_id):
                    self.stats.skipped += 1
                    continue
                event = self._stream.decode(fields)
                if event is None:
                    self.stats.rejected += 1
                    continue
                self.stats.read += 1
                if self._followed(event["order_id"]):
                    delivered += 1
                    self._deliver(event)
        return delivered

    def _followed(self, order_id: str | None) -> bool:
        return order_id is not None and self._follows(order_id)

    def _unavailable(self, exc: BaseException) -> None:
        self.stats.problem = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("events tail: Redis unavailable (%s); live order events wait", exc)
