"""Keeps a node's background loops alive and says which one is not.

Every loop runs in one `TaskGroup` that the node owns. A loop that raises is
logged with its traceback, counted, and started again after a backoff that
grows while it keeps failing; it never takes the node down, and it never dies
silently. A periodic loop calls `beat()` each round, so one that hangs (a
query that never returns) shows as stalled. `/ready` reports both.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from backend.backoff import Backoff
from backend.errors import AppError

log = logging.getLogger(__name__)

Loop = Callable[[], Awaitable[None]]


@dataclass
class LoopHealth:
    name: str
    stall_after: float | None
    state: str = "starting"  # running; failing until it beats again; done (a one-off)
    restarts: int = 0
    error: str | None = None
    last_beat: float = field(default_factory=time.monotonic)

    def problem(self, now: float) -> str | None:
        if self.state == "failing":
            return f"{self.name} is failing: {self.error}"
        if self.state != "done" and self.stall_after is not None:
            silent = now - self.last_beat
            if silent > self.stall_after:
                return f"{self.name} has stalled: no progress for {silent:.0f}s"
        return None


class Supervisor:
    def __init__(self, backoff_most: float = 10.0) -> None:
        self.loops: dict[str, LoopHealth] = {}
        self._backoff_most = backoff_most
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def restarts(self) -> int:
        return sum(loop.restarts for loop in self.loops.values())

    def beat(self, name: str) -> None:
        """The loop `name` made progress (and so is healthy again if it was failing)."""
        health = self.loops[name]
        health.last_beat, health.state = time.monotonic(), "running"

    def problems(self) -> list[str]:
        now = time.monotonic()
        return [p for loop in self.loops.values() if (p := loop.problem(now)) is not None]

    async def __aenter__(self) -> "Supervisor":
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every loop and wait for them (they never raise past `_keep`)."""
        assert self._group is not None
        for task in self._tasks:
            task.cancel()
        await self._group.__aexit__(None, None, None)

    def start(
        self,
        name: str,
        loop: Loop,
        *,
        stall_after: float | None = None,
        backoff_most: float | None = None,
        once: bool = False,
    ) -> None:
        """Run `loop` until the supervisor stops, restarting it whenever it fails.

        A loop with `stall_after` must `beat()` at least that often; after a
        failure it counts as failing until it beats again. With `once`, a loop
        that returns is done (a start-up step retried until it succeeds).
        """
        assert self._group is not None, "start loops inside `async with supervisor`"
        self.loops[name] = LoopHealth(name, stall_after)
        backoff = Backoff(first=0.1, most=backoff_most or self._backoff_most)
        job = self._keep(self.loops[name], loop, backoff, once)
        self._tasks.append(self._group.create_task(job, name=name))

    async def _keep(self, health: LoopHealth, loop: Loop, backoff: Backoff, once: bool) -> None:
        while True:
            if health.stall_after is None:
                health.state = "running"  # nothing to beat: running again is healthy again
            health.last_beat = started = time.monotonic()
            try:
                await loop()
                if once:
                    health.state, health.error = "done", None
                    return
                health.error = "it returned"
                log.error("background loop %s returned; restarting it", health.name)
            except AppError as exc:  # the database or Redis is away: expected, no traceback
                health.error = str(exc)
                log.warning("%s failed: %s", health.name, exc)
            except Exception as exc:
                health.error = f"{type(exc).__name__}: {exc}"
                log.exception("background loop %s failed; restarting it", health.name)
            health.state = "failing"
            health.restarts += 1
            await asyncio.sleep(backoff.delay(uptime=time.monotonic() - started))
