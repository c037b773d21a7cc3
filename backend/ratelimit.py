"""Writes per caller per minute, counted in Redis so that every node shares one count.

A fixed one-minute window per caller: a SET NX with an expiry and an INCR in
one pipeline, one round trip (Redis 6.2 has no EXPIRE NX). Redis away means no limit rather than no
writes: the limit protects the database, it is not a guarantee.
"""

import logging
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

from backend.errors import AppError

log = logging.getLogger(__name__)

_WINDOW = 60


class RateLimiter:
    def __init__(self, client: redis.Redis, per_minute: int, prefix: str = "") -> None:
        self._client = client
        self._per_minute = per_minute
        self._prefix = f"{prefix}ratelimit:writes:"
        self.refused = 0
        self.unchecked = 0  # hits let through because Redis did not answer

    async def hit(self, caller: str) -> None:
        """Count one write by `caller`; raise 429 RATE_LIMITED past the limit."""
        now = time.time()
        window = int(now // _WINDOW)
        key = f"{self._prefix}{caller}:{window}"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, 0, ex=_WINDOW * 2, nx=True)
                pipe.incr(key)
                _, count = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.unchecked += 1
            log.warning("rate limit not checked: %s", exc)
            return
        if int(count) > self._per_minute:
            self.refused += 1
            retry_after = max(1, int((window + 1) * _WINDOW - now) + 1)
            raise AppError(
                429,
                "RATE_LIMITED",
                f"at most {self._per_minute} writes a minute; retry later",
                {"retry_after": retry_after, "limit": self._per_minute},
            )
