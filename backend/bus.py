"""The Redis Pub/Sub bus on the channel `inventory_updates`: one JSON object per changed product.

Changes that are published together (an order's lines, or whatever queued
while the last publish was in flight) travel as one message,
`{"changes": [...]}`, of at most MAX_CHANGES; one change alone is its plain
object. Every message is sealed with the nodes' shared key (`backend.seal`):
one that is unsigned, forged or altered is dropped and counted, never applied.
A message costs a receiving node one seal check and one JSON decode, however
many changes it carries.

With tracing on (`backend.tracing`), each publish is a span, and its changes
travel as `{"changes": [...], "traceparent": "00-..."}` (never mixed with
another publish's), so that the other nodes' receipt, apply and push join its
trace; the seal covers the trace context like the rest. Off, messages are as
they always were, and a node ignores the field in a message from one with it on.

Pub/Sub is at-most-once, and that is all the bus promises: the ledger catch-up
repairs what it loses. So publishing never blocks or fails a write: changes go
to a bounded outbox that one task drains in pipelines, dropping the oldest when
Redis is away. One listener task per node holds the subscription, reconnects
with backoff, and reports every (re)subscription so the node can resync.
"""

import asyncio
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from backend.documents import Change
from backend.errors import AppError
from backend.seal import seal, unseal

if TYPE_CHECKING:
    from backend.tracing import Tracing

log = logging.getLogger(__name__)

CHANNEL = "inventory_updates"
MAX_CHANGES = 200  # changes in one message (~100 KB)
_WARN_EVERY = 60.0
_TRACEPARENT = 55  # "00-<trace id, 32 hex>-<span id, 16 hex>-<flags, 2 hex>"


@dataclass
class Faults:
    """Fault injection for tests: drop incoming messages the predicate accepts."""

    drop: Callable[[Change], bool] = field(default=lambda message: False)


@dataclass
class BusStats:
    published: int = 0
    publish_failures: int = 0
    outbox_dropped: int = 0
    subscriptions: int = 0
    subscribed: bool = False  # holding the subscription right now
    rejected: int = 0  # messages whose seal was missing or wrong
    problem: str | None = None  # why not, when not


class RedisBus:
    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        key: bytes,
        prefix: str = "",
        outbox_size: int = 10_000,
        on_message: Callable[[Change], None],
        on_subscribed: Callable[[int], Awaitable[object]],
    ) -> None:
        self.channel = f"{prefix}{CHANNEL}"
        self.faults = Faults()
        self.stats = BusStats()
        self._client = redis.Redis.from_url(
            url,
            client_name=f"orderflow:{node_id}",
            socket_connect_timeout=2,
            socket_timeout=5,
            socket_keepalive=True,
            health_check_interval=10,
        )
        # Changes, encoded, unsealed (with tracing, each behind its publish's traceparent).
        self._outbox: deque[str] = deque(maxlen=outbox_size)
        self._outbox_ready = asyncio.Event()
        self._sending = asyncio.Lock()  # one batch in flight: a flush waits for it
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._key = key
        self._warned_at = -_WARN_EVERY
        self.tracing: Tracing | None = None  # set by backend.tracing when traces are on

    @property
    def redis(self) -> redis.Redis:
        """The bus's Redis client, for other small uses of the same server (rate limits)."""
        return self._client

    async def close(self) -> None:
        await self._client.aclose()

    def publish(self, changes: Sequence[Change]) -> None:
        """Queue the changes for the publisher task; never blocks, never raises."""
        if self.tracing is not None:
            self._publish_traced(changes, self.tracing)
            return
        for change in changes:
            if len(self._outbox) == self._outbox.maxlen:
                self.stats.outbox_dropped += 1
            self._outbox.append(json.dumps(change, separators=(",", ":")))
        self._outbox_ready.set()

    def _publish_traced(self, changes: Sequence[Change], tracing: "Tracing") -> None:
        """Each change queued behind its publish span's traceparent (`_traced_messages`)."""
        parent = tracing.published(self.channel, len(changes))
        for change in changes:
            if len(self._outbox) == self._outbox.maxlen:
                self.stats.outbox_dropped += 1
            self._outbox.append(parent + json.dumps(change, separators=(",", ":")))
        self._outbox_ready.set()

    async def run_publisher(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await self._drain()

    async def flush(self, seconds: float) -> None:
        """Publish what the outbox still holds (at shutdown), waiting at most `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self._drain()
        except TimeoutError:
            log.warning("%d changes left unpublished at shutdown", len(self._outbox))

    async def _drain(self) -> None:
        async with self._sending:
            await self._send_all()

    async def _send_all(self) -> None:
        """Publish the outbox, MAX_CHANGES to a message, up to 50 messages to a pipeline."""
        outbox = self._outbox
        while outbox:
            batch = [outbox.popleft() for _ in range(min(len(outbox), 50 * MAX_CHANGES))]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for message in self._messages(batch):
                        pipe.publish(self.channel, message)
                    await pipe.execute()
                self.stats.published += len(batch)
            except (RedisError, OSError) as exc:
                self.stats.publish_failures += len(batch)
                log.warning("publish of %d changes failed: %s", len(batch), exc)

    def _messages(self, batch: list[str]) -> list[str]:
        if self.tracing is not None:
            return self._traced_messages(batch)
        return [
            self._message(batch[start : start + MAX_CHANGES])
            for start in range(0, len(batch), MAX_CHANGES)
        ]

    def _traced_messages(self, batch: list[str]) -> list[str]:
        """Each publish's changes in messages of their own, with its traceparent."""
        messages = []
        for parent, queued in itertools.groupby(batch, key=lambda entry: entry[:_TRACEPARENT]):
            texts = [entry[_TRACEPARENT:] for entry in queued]
            for start in range(0, len(texts), MAX_CHANGES):
                changes = ",".join(texts[start : start + MAX_CHANGES])
                text = '{"changes":[' + changes + '],"traceparent":"' + parent + '"}'
                messages.append(seal(text, self._key))
        return messages

    def _message(self, changes: list[str]) -> str:
        """One sealed message: a change alone as itself, several as `{"changes": [...]}`."""
        text = changes[0] if len(changes) == 1 else '{"changes":[' + ",".join(changes) + "]}"
        return seal(text, self._key)

    async def run_listener(self) -> None:
        """Hold the subscription for as long as the node lives."""
        delay = 0.1
        while True:
            before = self.stats.subscriptions
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                self.stats.problem = f"cannot subscribe to Redis: {type(exc).__name__}: {exc}"
                log.warning("bus subscription lost (%s); retrying in %.1fs", exc, delay)
            finally:
                self.stats.subscribed = False
            delay = 0.1 if self.stats.subscriptions > before else min(delay * 2, 5.0)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _listen(self) -> None:
        async with self._client.pubsub(ignore_subscribe_messages=False) as pubsub:
            await pubsub.subscribe(self.channel)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    self.stats.subscriptions += 1
                    self.stats.subscribed, self.stats.problem = True, None
                    await self._subscribed()
                elif message["type"] == "message":
                    self._deliver(message["data"])

    async def _subscribed(self) -> None:
        """Catch up or resync; whatever this misses, the catch-up loop repairs, so a
        failure never ends the subscription."""
        try:
            await self._on_subscribed(self.stats.subscriptions)
        except AppError as exc:  # the database is away: expected, no traceback
            log.warning("resync after subscribing failed: %s", exc)
        except Exception:
            log.exception("resync after subscribing failed")

    def _deliver(self, data: bytes) -> None:
        text = unseal(data, self._key)
        if text is None:
            self.stats.rejected += 1
            self._warn("dropped a message on %s whose seal is missing or wrong", self.channel)
            return
        try:
            message = json.loads(text)
        except ValueError:
            self._warn("dropped a sealed message that is not JSON on %s", self.channel)
            return
        if not isinstance(message, dict):
            return
        changes = message.get("changes", (message,))
        if not isinstance(changes, list | tuple):
            return
        if self.tracing is not None and "traceparent" in message:
            with self.tracing.received(message["traceparent"], self.channel, len(changes)):
                for change in changes:
                    self._take(change)
            return
        for change in changes:
            self._take(change)

    def _take(self, change: object) -> None:
        if not isinstance(change, dict):
            return
        sealed = cast(Change, change)  # sealed by a node: a Change (a missing field: KeyError)
        if self.faults.drop(sealed):
            return
        try:
            self._on_message(sealed)
        except (KeyError, TypeError, ValueError) as exc:
            self._warn("dropped a malformed change on %s: %s", self.channel, exc)

    def _warn(self, message: str, *args: object) -> None:
        """At most one warning a minute: whoever floods the channel cannot flood the log."""
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(message + " (%d rejected so far)", *args, self.stats.rejected)
