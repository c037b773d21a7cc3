"""One consumer group's worker on this node: read, handle, retry, bury.

The consumer name in the group is the node id, so a node that restarts finds
its own unacked entries again. Each round:

* retries that are due are claimed back (XCLAIM, only if nobody else took
  the entry meanwhile) and handled again;
* entries idle longer than WORKER_CLAIM_IDLE_SECONDS, whoever holds them (a
  dead node, or this one before a restart), are taken over (XAUTOCLAIM);
* new entries are read (XREADGROUP, blocking at most a second).

The attempt number is the entry's delivery count, which Redis keeps: a
consumer that dies mid-message still used up an attempt. A failed attempt is
retried after WORKER_RETRY_BASE_SECONDS * 2^(attempt-1), capped at half the
claim idle time (beyond that, another node would take it over first); after
WORKER_MAX_ATTEMPTS it is a dead letter. Events the consumer does not want,
and handled ones, are acked together after each batch.

What the consumer does not want is mostly told by an entry's plain hints
(`backend.events.stream`): such an entry is acked without its seal being
checked or its event decoded, as is a replayed dead letter for another group.
Whatever is handled is decided on the sealed event.

A read takes as many entries as the last batch's pace says can be handled in
ROUND_SECONDS, or a quarter of the claim idle time if that is shorter (at
least BATCH, at most BATCH_MOST, growing at most twofold a round): entries
skipped on their hints cost microseconds, so under load one XREADGROUP and one
XACK serve hundreds of them, while slow handlers keep batches small, so that
due retries and the claim of idle entries still come round about as often as
the blocking read's beat, and entries waiting in a batch are not taken over
as idle by another node.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from redis.exceptions import RedisError, ResponseError

from backend.backoff import Backoff
from backend.documents import OrderEvent
from backend.errors import AppError
from backend.events.consumer import Consumer
from backend.events.dead import DeadLetters
from backend.events.stream import FOR_FIELD, EventStream, Hints, stop_if_cancelled
from backend.settings import Settings

log = logging.getLogger(__name__)

BATCH = 20  # the fewest entries read (or claimed) at a time
BATCH_MOST = 500  # the most: one XREADGROUP's reply, and one XACK
BLOCK_SECONDS = 1.0  # the longest blocking read: the loop beats at least this often
ROUND_SECONDS = 0.5  # the handling a read may bring at the last batch's pace
_WARN_EVERY = 30.0

Observe = Callable[[str, str, float], None]  # (group, outcome, seconds handling)
Entry = tuple[bytes | None, Mapping[bytes, bytes] | None]


@dataclass
class _Retry:
    due: float  # monotonic time
    attempt: int  # the attempt it will be
    idle_ms: int  # idle at least this long since this node failed it: nobody took it since


@dataclass
class RunnerStats:
    ok: int = 0
    retried: int = 0
    dead: int = 0
    rejected: int = 0  # entries whose seal was missing or wrong: acked, never handled
    skipped: int = 0  # entries acked on their hints alone, without unsealing
    taken_over: int = 0  # entries claimed after sitting idle
    trimmed: int = 0  # pending entries trimmed from the stream before anyone handled them
    problem: str | None = None


class Runner:
    def __init__(
        self,
        consumer: Consumer,
        stream: EventStream,
        dead: DeadLetters,
        node_id: str,
        settings: Settings,
        observe: Observe,
    ) -> None:
        self.consumer = consumer
        self.group = consumer.name
        self.stats = RunnerStats()
        self.batch = BATCH  # entries the next read (or claim) takes: see `_pace`
        self._stream = stream
        self._redis = stream.redis
        self._dead = dead
        self._name = node_id
        self._group_key = self.group.encode()
        self._max_attempts = settings.worker_max_attempts
        self._retry_base = settings.worker_retry_base_seconds
        self._claim_idle = settings.worker_claim_idle_seconds
        self._round_seconds = min(ROUND_SECONDS, self._claim_idle / 4)
        self._observe = observe
        self._retries: dict[str, _Retry] = {}
        self._claim_from = "0-0"
        self._next_claim = 0.0
        self._had_group = False
        self._warned_at = -_WARN_EVERY
        self._beat: Callable[[], None] = lambda: None

    def retry_delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based)."""
        return min(self._retry_base * 2.0 ** (attempt - 1), self._claim_idle / 2)

    async def run(self, beat: Callable[[], None]) -> None:
        """Work until cancelled. Redis being away is waited out here (the node still
        takes orders); a database error ends the loop, for the supervisor to report."""
        self._beat = beat  # also after each entry: a batch of slow handlers is progress
        backoff = Backoff(first=0.1, most=5.0)
        since = time.monotonic()
        while True:
            beat()
            try:
                await self.ensure_group()
                while True:
                    await self._round()
                    stop_if_cancelled()
                    beat()
                    self._recovered()
            except ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                stop_if_cancelled()
                log.warning("%s: the group is gone from Redis; creating it again", self.group)
            except (RedisError, OSError) as exc:
                stop_if_cancelled()
                self._unavailable(exc)
                await asyncio.sleep(backoff.delay(uptime=time.monotonic() - since))
                since = time.monotonic()

    async def ensure_group(self) -> None:
        """The group at the stream's end the first time (a new group acts on events from
        now on, not on the stream's history); from its start if it vanished since (Redis
        lost its data: the stream holds only what came after)."""
        if await self._stream.create_group(self.group, "0" if self._had_group else "$"):
            self._retries.clear()  # their entries went with the old group
            self._claim_from = "0-0"
        self._had_group = True

    async def _round(self) -> None:
        now = time.monotonic()
        await self._retry_due(now)
        if now >= self._next_claim:
            self._next_claim = now + self._claim_idle / 2
            await self._take_over()
        reply = await self._redis.xreadgroup(
            self.group,
            self._name,
            {self._stream.name: ">"},
            count=self.batch,
            block=self._block_ms(),
        )
        for _, entries in cast(list[tuple[bytes, list[Entry]]] | None, reply) or ():
            await self._handle_all(entries, [1] * len(entries))

    def _block_ms(self) -> int:
        now = time.monotonic()
        until = min(
            [now + BLOCK_SECONDS, self._next_claim, *(r.due for r in self._retries.values())]
        )
        return max(1, int((until - now) * 1000))  # 0 would block for ever

    async def _retry_due(self, now: float) -> None:
        for entry_id in [key for key, retry in self._retries.items() if retry.due <= now]:
            retry = self._retries.pop(entry_id)
            reply = await self._redis.xclaim(
                self._stream.name,
                self.group,
                self._name,
                min_idle_time=retry.idle_ms,
                message_ids=[entry_id],
            )
            claimed = cast(list[Entry], reply)
            if claimed and claimed[0][0] is None:  # trimmed from the stream meanwhile
                self.stats.trimmed += 1
                await self._redis.xack(self._stream.name, self.group, entry_id)
                continue
            await self._handle_all(claimed, [retry.attempt] * len(claimed))

    async def _take_over(self) -> None:
        """Claim entries idle past the claim time, a batch per round, cycling through."""
        next_from, entries, *_ = await self._redis.xautoclaim(
            self._stream.name,
            self.group,
            self._name,
            min_idle_time=int(self._claim_idle * 1000),
            start_id=self._claim_from,
            count=self.batch,
        )
        self._claim_from = next_from.decode()
        present = [entry for entry in entries if entry[0] is not None]
        if len(present) < len(entries):
            # Redis 6.2 keeps such entries pending without their ids; nothing to handle.
            self.stats.trimmed += len(entries) - len(present)
            log.warning("%s: entries were trimmed before they were handled", self.group)
        if not present:
            return
        self.stats.taken_over += len(present)
        attempts = await self._deliveries([entry_id for entry_id, _ in present])
        for entry_id, _ in present:
            self._retries.pop(entry_id.decode(), None)
        await self._handle_all(present, attempts)

    async def _deliveries(self, entry_ids: list[bytes]) -> list[int]:
        """How many times each entry has been delivered, this claim included."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(
                    self._stream.name, self.group, min=entry_id, max=entry_id, count=1
                )
            replies = await pipe.execute()
        return [int(reply[0]["times_delivered"]) if reply else 1 for reply in replies]

    async def _handle_all(self, entries: list[Entry], attempts: list[int]) -> None:
        started = time.perf_counter()
        done: list[bytes] = []
        for (raw_id, fields), attempt in zip(entries, attempts, strict=True):
            if raw_id is None or fields is None:
                continue
            if self._skips(fields) or await self._handle(raw_id.decode(), fields, attempt):
                done.append(raw_id)
            self._beat()
        if done:
            await self._redis.xack(self._stream.name, self.group, *done)
        self._pace(len(entries), time.perf_counter() - started)

    def _skips(self, fields: Mapping[bytes, bytes]) -> bool:
        """Whether the entry is acked unread: a replay for another group, or hints
        that the consumer cannot want."""
        target = fields.get(FOR_FIELD)
        if target is not None and target != self._group_key:
            return True
        hints = Hints.read(fields)
        if hints is None or self.consumer.might_want(hints):
            return False
        self.stats.skipped += 1
        return True

    def _pace(self, entries: int, seconds: float) -> None:
        """Size the next read to what ROUND_SECONDS handles at this batch's pace."""
        if entries == 0:
            return
        fits = int(self._round_seconds * entries / seconds) if seconds > 0 else BATCH_MOST
        self.batch = max(BATCH, min(fits, 2 * self.batch, BATCH_MOST))

    async def _handle(self, entry_id: str, fields: Mapping[bytes, bytes], attempt: int) -> bool:
        """Handle one entry; whether it is done with (to be acked)."""
        event = self._stream.decode(fields)
        if event is None:
            self.stats.rejected += 1
            self._observe(self.group, "rejected", 0.0)
            log.warning("%s: dropped entry %s: its seal is missing or wrong", self.group, entry_id)
            return True
        if not self.consumer.wants(event):
            return True
        if attempt > self._max_attempts:  # its handlers stopped mid-way, every time
            stopped = f"its consumer stopped while handling it, {attempt - 1} times"
            await self._bury(entry_id, event, stopped, attempt - 1)
            return True
        started = time.perf_counter()
        try:
            await self.consumer.handle(event, attempt)
        except Exception as exc:
            seconds = time.perf_counter() - started
            outcome = await self._failed(entry_id, event, attempt, exc)
            self._observe(self.group, outcome, seconds)
            return outcome == "dead"
        self.stats.ok += 1
        self._observe(self.group, "ok", time.perf_counter() - started)
        return True

    async def _failed(self, entry_id: str, event: OrderEvent, attempt: int, exc: Exception) -> str:
        error = str(exc) if isinstance(exc, AppError) else f"{type(exc).__name__}: {exc}"
        what = f"{self.group}: {event['type']} {event['event_id']} failed"
        if attempt >= self._max_attempts:
            log.error(
                "%s %d times; now a dead letter: %s",
                what,
                attempt,
                error,
                exc_info=None if isinstance(exc, AppError) else exc,
            )
            await self._bury(entry_id, event, error, attempt)
            return "dead"
        delay = self.retry_delay(attempt)
        self._retries[entry_id] = _Retry(time.monotonic() + delay, attempt + 1, int(delay * 1000))
        self.stats.retried += 1
        log.warning("%s (attempt %d), retrying in %.2fs: %s", what, attempt, delay, error)
        return "retried"

    async def _bury(self, entry_id: str, event: OrderEvent, error: str, attempts: int) -> None:
        await self._dead.bury(self.group, entry_id, event, error, attempts)
        self.stats.dead += 1

    def _unavailable(self, exc: BaseException) -> None:
        self.stats.problem = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("%s: Redis unavailable (%s); waiting for it", self.group, exc)

    def _recovered(self) -> None:
        if self.stats.problem is not None:
            self.stats.problem = None
            log.info("%s: Redis answers again", self.group)
