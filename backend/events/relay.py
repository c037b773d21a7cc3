"""The relay: committed outbox rows onto the events stream, at least once, in order.

Any node may relay, one at a time: `claim_outbox` takes or renews a lease in
Postgres and returns the oldest unrelayed events; the holder XADDs them in
`seq` order in one pipeline, then `mark_relayed`. A relay that dies between
the two loses nothing: its lease runs out, the next holder adds the same
events again, and consumers dedupe by event_id. Events of one order are
written under that order's row lock, so `seq` order is their commit order.

With Redis away nothing is marked, so everything waits in the outbox; the loop
keeps trying with a growing wait, and once that wait is longer than the lease,
a node that can still reach Redis may take over.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError

from backend.backoff import Backoff
from backend.documents import OrderEvent
from backend.errors import AppError
from backend.events.stream import EventStream, stop_if_cancelled
from database import Database

log = logging.getLogger(__name__)

LEASE_SECONDS = 5
# After a round that moved events, the next waits at least this long: under
# load it then carries every event committed meanwhile (one claim, one
# pipeline, one mark for many orders) instead of running once per commit.
GAP_SECONDS = 0.05
_WARN_EVERY = 30.0


@dataclass
class RelayStats:
    relayed: int = 0  # events added to the stream (a retry after a lost lease counts again)
    holding: bool = False  # this node held the lease at its last claim
    problem: str | None = None  # why the last round failed, until one succeeds


class Relay:
    def __init__(
        self,
        db: Database,
        stream: EventStream,
        node_id: str,
        *,
        interval: float,
        batch: int,
        groups: Sequence[str] = (),
        lease_seconds: int = LEASE_SECONDS,
    ) -> None:
        self.stats = RelayStats()
        self._db = db
        self._stream = stream
        self._node_id = node_id
        self._interval = interval
        self._batch = batch
        self._lease = lease_seconds
        self._groups = list(groups)  # made before the first add: none misses an event
        self._woken = asyncio.Event()
        self._warned_at = -_WARN_EVERY

    def wake(self) -> None:
        """This node committed something that may have written events: relay now, not at
        the next tick. Only the lease holder listens (others would only contend for it)."""
        if self.stats.holding:
            self._woken.set()

    async def run(self, beat: Callable[[], None]) -> None:
        """Relay until cancelled. A database error ends the loop (the supervisor retries
        and reports it); Redis being away does not: the node still takes orders."""
        backoff = Backoff(first=0.1, most=self._lease + 1.0)
        healthy_since = time.monotonic()
        while True:
            beat()
            relayed = self.stats.relayed
            try:
                more = await self.relay_once()
            except (RedisError, OSError) as exc:
                stop_if_cancelled()
                self._unavailable(exc)
                await asyncio.sleep(backoff.delay(uptime=time.monotonic() - healthy_since))
                healthy_since = time.monotonic()
                continue
            stop_if_cancelled()
            if self.stats.problem is not None:
                log.info("relay: Redis answers again; the outbox flows")
                self.stats.problem = None
            if not more:
                await self._pause(busy=self.stats.relayed > relayed)

    async def relay_once(self) -> bool:
        """One claim and its XADDs; whether a full batch went (so more may be waiting)."""
        claimed = await self._db.claim_outbox(self._node_id, self._batch, self._lease)
        self.stats.holding = bool(claimed["leased"])
        events: list[OrderEvent] = claimed["events"]
        if not self.stats.holding or not events:
            return False
        while self._groups:
            await self._stream.create_group(self._groups[-1])
            self._groups.pop()
        await self._stream.add(events)
        try:
            await self._db.mark_relayed(self._node_id, [event["seq"] for event in events])
        except AppError as exc:
            if exc.code != "LEASE_LOST":
                raise
            # Stalled past the lease: the new holder adds them too; consumers dedupe.
            log.warning("relay: lost the lease after adding %d events", len(events))
            self.stats.holding = False
            return False
        self.stats.relayed += len(events)
        return len(events) >= self._batch

    async def _pause(self, busy: bool) -> None:
        if busy:
            await asyncio.sleep(GAP_SECONDS)
            if self._woken.is_set():
                self._woken.clear()
                return
        try:
            async with asyncio.timeout(self._interval):
                await self._woken.wait()
        except TimeoutError:
            pass
        self._woken.clear()

    def _unavailable(self, exc: BaseException) -> None:
        self.stats.problem = f"cannot add to the stream: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("relay: Redis unavailable (%s); events wait in the outbox", exc)
