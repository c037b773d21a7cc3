"""The Redis Pub/Sub bus on the channel `inventory_updates`: one JSON object per changed product.

Pub/Sub is at-most-once, and that is all the bus promises: the ledger catch-up
repairs what it loses. So publishing never blocks or fails a write: changes go
to a bounded outbox that one task drains in pipelines, dropping the oldest when
Redis is away. One listener task per node holds the subscription, reconnects
with backoff, and reports every (re)subscription so the node can resync.
"""

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Json = dict[str, Any]
CHANNEL = "inventory_updates"


@dataclass
class Faults:
    """Fault injection for tests: drop incoming messages the predicate accepts."""

    drop: Callable[[Json], bool] = field(default=lambda message: False)


@dataclass
class BusStats:
    published: int = 0
    publish_failures: int = 0
    outbox_dropped: int = 0
    subscriptions: int = 0
    subscribed: bool = False  # holding the subscription right now
    problem: str | None = None  # why not, when not


class RedisBus:
    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        prefix: str = "",
        outbox_size: int = 10_000,
        on_message: Callable[[Json], None],
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
        self._outbox: deque[str] = deque(maxlen=outbox_size)
        self._outbox_ready = asyncio.Event()
        self._sending = asyncio.Lock()  # one batch in flight: a flush waits for it
        self._on_message = on_message
        self._on_subscribed = on_subscribed

    async def close(self) -> None:
        await self._client.aclose()

    def publish(self, changes: Sequence[Json]) -> None:
        """Queue the changes for the publisher task; never blocks, never raises."""
        for change in changes:
            if len(self._outbox) == self._outbox.maxlen:
                self.stats.outbox_dropped += 1
            self._outbox.append(json.dumps(change, separators=(",", ":")))
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
        while self._outbox:
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 500))]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
                self.stats.published += len(batch)
            except (RedisError, OSError) as exc:
                self.stats.publish_failures += len(batch)
                log.warning("publish of %d changes failed: %s", len(batch), exc)

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
        try:
            await self._on_subscribed(self.stats.subscriptions)
        except Exception:  # the catch-up loop repairs what this missed; keep listening
            log.exception("resync after subscribing failed")

    def _deliver(self, data: bytes) -> None:
        try:
            change = json.loads(data)
        except ValueError:
            log.warning("dropped a message that is not JSON on %s", self.channel)
            return
        if not isinstance(change, dict) or self.faults.drop(change):
            return
        try:
            self._on_message(change)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("dropped a malformed change on %s: %s", self.channel, exc)
