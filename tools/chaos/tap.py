"""The run's own ear and mouth on the bus channel: it records what nodes publish, cuts
every subscriber off, and publishes old messages again, shuffled and doubled.

Nodes must treat all of it as Redis Pub/Sub may: lost messages are repaired from
the ledger, and a message older than what a node holds changes nothing.
"""

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

CHANNEL = "inventory_updates"


class Tap:
    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
        self.heard: deque[bytes] = deque(maxlen=2000)
        self.replayed = 0

    async def close(self) -> None:
        await self._client.aclose()

    async def listen(self, stop: asyncio.Event) -> None:
        """Record the channel until `stop`, resubscribing after every cut."""
        while not stop.is_set():
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    while not stop.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0.5
                        )
                        if message and message["type"] == "message":
                            self.heard.append(message["data"])
            except (RedisError, OSError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.3)

    async def cut_subscribers(self) -> int:
        """CLIENT KILL TYPE pubsub: deliveries in flight are lost; nodes must resubscribe."""
        return int(await self._again(lambda: self._client.client_kill_filter(_type="pubsub")))

    async def _again(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """A pooled connection from before a Redis restart fails once: use a fresh one."""
        for attempt in range(3):
            try:
                return await command()
            except (ConnectionError, RedisConnectionError):
                if attempt == 2:
                    raise
                await asyncio.sleep(0.3)
        raise AssertionError("unreachable")

    async def replay(self, rng: random.Random) -> int:
        """Publish a shuffled handful of older messages, and a few recent ones twice."""
        heard = list(self.heard)
        older = heard[: max(0, len(heard) - 20)]
        picked = rng.sample(older, min(len(older), rng.randint(10, 40)))
        picked += heard[-min(len(heard), 5) :]
        rng.shuffle(picked)
        for data in picked:
            await self._again(partial(self._client.publish, CHANNEL, data))
        self.replayed += len(picked)
        return len(picked)
