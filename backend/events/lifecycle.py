"""A node's part in the events stream: the relay, one runner per consumer, the dead
letters and the status, started together and closed together.

Without Redis there is no stream: events wait in the outbox (the status still
counts them) and orders still place and settle through the database.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from backend.documents import Json
from backend.events.dead import DeadLetters
from backend.events.registry import check, consumers
from backend.events.relay import Relay
from backend.events.runner import Runner
from backend.events.status import WATCH_SECONDS, LifecycleStatus, StatusWatch
from backend.events.stream import EventStream
from backend.supervisor import Supervisor

if TYPE_CHECKING:
    from backend.node import Node

log = logging.getLogger(__name__)

_STALL_SECONDS = 30.0  # a round that blocks longer than this is stuck


class Lifecycle:
    def __init__(self, node: "Node") -> None:
        settings = node.settings
        check(settings.worker_names)
        self.stream: EventStream | None = None
        if node.bus is not None and settings.bus_key is not None:
            self.stream = EventStream(
                node.bus.redis,
                settings.bus_key.get_secret_value().encode(),
                settings.channel_prefix,
                settings.stream_maxlen,
            )
        self.dead = DeadLetters(node.db, self.stream)
        self.status = StatusWatch(node.db, self.stream)
        self.runners: list[Runner] = []
        self.relay: Relay | None = None
        if self.stream is None:
            return
        self.runners = [
            Runner(c, self.stream, self.dead, settings.node_id, settings, node.metrics.on_worker)
            for c in consumers(node)
        ]
        self.relay = Relay(
            node.db,
            self.stream,
            settings.node_id,
            interval=settings.relay_interval_seconds,
            batch=settings.relay_batch,
            groups=[runner.group for runner in self.runners],
        )

    def wake(self) -> None:
        """This node committed a change: the relay may have events to move."""
        if self.relay is not None:
            self.relay.wake()

    def start(self, supervisor: Supervisor) -> None:
        """Start the loops (once the catalog is loaded)."""

        def beat(name: str) -> Callable[[], None]:
            return lambda: supervisor.beat(name)

        status = self.status
        supervisor.start(
            "events-status",
            lambda: status.run(beat("events-status")),
            stall_after=_STALL_SECONDS + WATCH_SECONDS,
            backoff_most=10.0,
        )
        relay = self.relay
        if relay is None:
            log.info("no Redis: order events wait in the outbox until a node with Redis relays")
            return
        supervisor.start("relay", lambda: relay.run(beat("relay")), stall_after=_STALL_SECONDS)
        for runner in self.runners:
            name = f"worker:{runner.group}"
            supervisor.start(name, _bind(runner, beat(name)), stall_after=_STALL_SECONDS)
        log.info(
            "events: relaying the outbox to Redis; workers: %s",
            ", ".join(runner.group for runner in self.runners) or "none",
        )

    async def read_status(self) -> LifecycleStatus:
        """Read now (and so refresh what /metrics shows)."""
        return await self.status.read()

    async def replay(self, dead_letter_id: int | None) -> list[Json]:
        return await self.dead.replay(dead_letter_id)

    async def aclose(self) -> None:
        """Close what the consumers hold (HTTP or SMTP clients), after their loops stopped."""
        for runner in self.runners:
            close = getattr(runner.consumer, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.exception("closing the %s consumer failed", runner.group)


def _bind(runner: Runner, beat: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    return lambda: runner.run(beat)
