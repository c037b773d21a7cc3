"""How far behind the lifecycle is: the outbox, the stream, each group, the dead letters.

Redis 6.2 (the embedded one) has no `lag` in XINFO GROUPS, so a group's lag
is counted: the entries after its last-delivered id, up to LAG_COUNT_LIMIT
(`lag_capped` says the real figure is at least that). A Redis that reports
`lag` is believed instead.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.exceptions import RedisError, ResponseError

from backend.events.stream import EventStream, stop_if_cancelled
from database import Database

log = logging.getLogger(__name__)

LAG_COUNT_LIMIT = 1000
WATCH_SECONDS = 5.0


@dataclass
class GroupStatus:
    name: str
    consumers: int
    pending: int  # delivered, not yet acked (being handled, waiting for a retry, or orphaned)
    lag: int  # entries not yet delivered to the group
    lag_capped: bool
    last_delivered_id: str


@dataclass
class LifecycleStatus:
    outbox_pending: int = 0
    outbox_oldest_seconds: float = 0.0
    dead_letters: int = 0
    stream: str | None = None
    stream_length: int | None = None
    groups: list[GroupStatus] = field(default_factory=list)
    problem: str | None = None  # why the stream's part is missing

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def read_status(db: Database, stream: EventStream | None) -> LifecycleStatus:
    stats = await db.lifecycle_stats()
    status = LifecycleStatus(
        outbox_pending=int(stats["outbox_pending"]),
        outbox_oldest_seconds=float(stats["outbox_oldest_seconds"]),
        dead_letters=int(stats["dead_letters"]),
    )
    if stream is None:
        status.problem = "no Redis: events wait in the outbox"
        return status
    status.stream = stream.name
    try:
        status.stream_length, status.groups = await _stream_status(stream)
    except (RedisError, OSError) as exc:
        status.problem = f"Redis unavailable: {exc}"
    return status


async def _stream_status(stream: EventStream) -> tuple[int, list[GroupStatus]]:
    client = stream.redis
    length = int(await client.xlen(stream.name))
    try:
        infos: list[dict[str, Any]] = await client.xinfo_groups(stream.name)
    except ResponseError:  # no stream yet
        return length, []
    groups = [await _group_status(stream, info) for info in infos]
    return length, groups


async def _group_status(stream: EventStream, info: dict[str, Any]) -> GroupStatus:
    last = _text(info["last-delivered-id"])
    lag, capped = info.get("lag"), False
    if lag is None:
        after = await stream.redis.xrange(stream.name, f"({last}", "+", count=LAG_COUNT_LIMIT)
        lag = len(after or ())
        capped = lag >= LAG_COUNT_LIMIT
    return GroupStatus(
        name=_text(info["name"]),
        consumers=int(info["consumers"]),
        pending=int(info["pending"]),
        lag=int(lag),
        lag_capped=capped,
        last_delivered_id=last,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StatusWatch:
    """The latest status, read every WATCH_SECONDS, for /metrics (which cannot wait on
    Redis and Postgres at scrape time)."""

    def __init__(self, db: Database, stream: EventStream | None) -> None:
        self.latest: LifecycleStatus | None = None
        self._db = db
        self._stream = stream

    async def read(self) -> LifecycleStatus:
        self.latest = await read_status(self._db, self._stream)
        return self.latest

    async def run(self, beat: Callable[[], None], every: float = WATCH_SECONDS) -> None:
        while True:
            await self.read()
            stop_if_cancelled()
            beat()
            await asyncio.sleep(every)
