"""Restart what the launcher started when it dies, as Kubernetes restarts a pod's containers.

Each process has its own backoff: the first restart comes soon, each failure
that follows doubles the wait (with jitter) up to a ceiling, and a process that
stayed up a while starts over from the first delay. So a process that dies at
once every time costs a start every half minute, not a spinning launcher.

The restarter itself never sleeps: the launcher calls `check()`, then sleeps
`pause()`, so a signal during a backoff stops it at once. Starting a server
again (Redis, Postgres) blocks until it answers; starting a node does not, and
its /health is then polled at each check.
"""

import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from backend.backoff import Backoff

log = logging.getLogger("backend.cluster")

_IDLE_PAUSE = 0.5  # how often a running process is looked at
_STARTING_PAUSE = 0.2  # how often a starting one is asked whether it is ready


class Child(Protocol):
    """A process the launcher started and keeps running."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def ended(self) -> str | None:
        """None while it runs; else how it ended, in words (and reaped, if ours)."""

    def start(self) -> None:
        """Start it again; raise if it cannot be (its port is taken, say)."""

    def ready(self) -> bool:
        """Whether it serves yet; asked until it does after each start."""

    def stop(self) -> None:
        """Stop it: a start that never got ready is abandoned."""


class Phase(enum.Enum):
    RUNNING = "running"
    WAITING = "waiting"  # dead, to be started at `restart_at`
    STARTING = "starting"  # started, not ready yet


@dataclass
class Watch:
    child: Child
    backoff: Backoff
    since: float  # when the current phase began
    phase: Phase = Phase.RUNNING
    restart_at: float = 0.0
    down_since: float = 0.0  # when it last went down, for "back after N s"
    restarts: int = 0


class Restarter:
    """Watches children that are running now; restarts each one that ends."""

    def __init__(
        self,
        children: Iterable[Child],
        backoff: Callable[[], Backoff] = Backoff,
        *,
        startup_timeout: float = 60.0,
    ) -> None:
        self._startup_timeout = startup_timeout
        now = time.monotonic()
        self.watches = [Watch(child, backoff(), now, down_since=now) for child in children]

    def check(self) -> None:
        """Look at every child once: notice deaths, start the due ones, greet the ready."""
        for watch in self.watches:
            self._step(watch, time.monotonic())

    def pause(self) -> float:
        """How long the caller may sleep before the next `check()`."""
        now = time.monotonic()
        pauses = [_IDLE_PAUSE]
        for watch in self.watches:
            if watch.phase is Phase.STARTING:
                pauses.append(_STARTING_PAUSE)
            elif watch.phase is Phase.WAITING:
                pauses.append(max(0.0, watch.restart_at - now))
        return min(pauses)

    def _step(self, watch: Watch, now: float) -> None:
        child = watch.child
        if watch.phase is Phase.WAITING:
            if now >= watch.restart_at:
                self._start(watch, now)
            return
        how = child.ended()
        if how is None:
            if watch.phase is Phase.STARTING:
                self._await_ready(watch, now)
        elif watch.phase is Phase.RUNNING:
            watch.down_since = now
            uptime = now - watch.since
            self._failed(watch, now, f"{_label(child)} {how} after {uptime:.1f} s up", uptime)
        else:
            self._failed(watch, now, f"{_label(child)} {how} before it was ready")

    def _start(self, watch: Watch, now: float) -> None:
        child = watch.child
        watch.restarts += 1
        try:
            child.start()
        except Exception as exc:  # whatever it is, the next try may fare better
            self._failed(watch, now, f"{child.name} could not start: {exc}")
            return
        log.info("%s started again (restart %d)", _label(child), watch.restarts)
        watch.phase, watch.since = Phase.STARTING, now
        self._await_ready(watch, time.monotonic())

    def _await_ready(self, watch: Watch, now: float) -> None:
        child = watch.child
        if child.ready():
            down = now - watch.down_since
            log.info("%s is back, %.1f s after it went down", _label(child), down)
            watch.phase, watch.since = Phase.RUNNING, now
        elif now - watch.since > self._startup_timeout:
            what = f"{_label(child)} was not ready within {self._startup_timeout:g} s"
            child.stop()
            self._failed(watch, now, what)

    def _failed(self, watch: Watch, now: float, what: str, uptime: float = 0.0) -> None:
        """Schedule the next start, after a wait that grows while it keeps failing."""
        delay = watch.backoff.delay(uptime)
        log.warning("%s; restarting it in %.2f s", what, delay)
        watch.phase, watch.restart_at = Phase.WAITING, now + delay


def _label(child: Child) -> str:
    return child.name if child.pid is None else f"{child.name} (pid {child.pid})"
