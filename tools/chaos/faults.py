"""The faults: a schedule drawn from the seed, and the injector that plays it.

Faults on different things overlap freely (a node dies while Postgres restarts);
faults on one thing take turns at the blow and its undoing. A fault's window runs
from the blow until the thing is back and every node answers /ready again, so
what clients see during it may be a 503 or a refused connection, and after the
last one nothing may be.
"""

import asyncio
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from tools.chaos.cluster import Cluster
from tools.chaos.model import FaultWindow, Records, Violation
from tools.chaos.tap import Tap

KINDS = ("node_kill", "redis_kill", "redis_pause", "postgres_restart", "bus_drop", "bus_replay")
HOLD = {  # (shortest, longest) seconds the thing stays down or paused
    "node_kill": (0.3, 1.5),
    "redis_kill": (0.5, 2.0),
    "redis_pause": (1.0, 3.0),
    "postgres_restart": (0.2, 1.5),
    "bus_drop": (0.0, 0.0),
    "bus_replay": (0.0, 0.0),
}
READY_TIMEOUT = 30.0
FIRST_AT = 1.5  # seconds of load before the first fault


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load started
    kind: str
    target: str  # node-N, redis or postgres: faults on one target take turns
    hold: float


def quiet_tail(seconds: float) -> float:
    """Seconds at the end of the load with no fault starting: recovery, then clean load."""
    return min(10.0, max(5.0, seconds * 0.25))


def schedule(seed: int, seconds: float, nodes: list[str]) -> list[Fault]:
    """Every kind at least once when there is room, then a fault every 2.5 s or so."""
    rng = random.Random(seed)
    last = seconds - quiet_tail(seconds)
    if last <= FIRST_AT:
        return []
    count = max(len(KINDS), int((last - FIRST_AT) / 2.5))
    kinds = rng.sample(KINDS, len(KINDS)) + [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    times = sorted(rng.uniform(FIRST_AT, last) for _ in kinds)
    return [
        Fault(round(at, 2), kind, _target(kind, nodes, rng), round(rng.uniform(*HOLD[kind]), 2))
        for at, kind in zip(times, kinds, strict=True)
    ]


def _target(kind: str, nodes: list[str], rng: random.Random) -> str:
    if kind == "node_kill":
        return rng.choice(nodes)
    return "postgres" if kind == "postgres_restart" else "redis"


class Injector:
    def __init__(
        self, cluster: Cluster, tap: Tap, http: httpx.AsyncClient, records: Records, seed: int
    ) -> None:
        self.cluster = cluster
        self.tap = tap
        self.http = http
        self.records = records
        self.rng = random.Random(f"{seed}:inject")
        self.actions: dict[str, Callable[[Fault], Awaitable[str]]] = {
            "node_kill": self._node_kill,
            "redis_kill": self._redis_kill,
            "redis_pause": self._redis_pause,
            "postgres_restart": self._postgres_restart,
            "bus_drop": self._bus_drop,
            "bus_replay": self._bus_replay,
        }

    async def play(self, plan: list[Fault]) -> None:
        turns: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        await asyncio.gather(*(self._one(fault, turns[fault.target]) for fault in plan))

    async def _one(self, fault: Fault, turn: asyncio.Lock) -> None:
        await asyncio.sleep(max(0.0, self.records.origin + fault.at - time.monotonic()))
        async with turn:  # the blow and its undoing; other faults on the target wait
            started = time.monotonic()
            try:
                detail = await self.actions[fault.kind](fault)
            except Exception as exc:  # a fault that cannot be injected or undone is a finding
                detail = f"failed: {type(exc).__name__}: {exc}"
                message = f"{fault.kind} on {fault.target}: {detail}"
                self.records.incidents.append(Violation("fault", message))
        late = await self.cluster.wait_ready(self.http, READY_TIMEOUT)
        self.records.windows.append(
            FaultWindow(fault.kind, fault.target, started, time.monotonic(), detail)
        )
        for name in late:
            node = next(n for n in self.cluster.nodes if n.name == name)
            message = f"{name} not ready {READY_TIMEOUT:.0f}s after {fault.kind} on {fault.target}"
            self.records.incidents.append(Violation("node", message, tuple(node.tail())))

    async def _node_kill(self, fault: Fault) -> str:
        node = next(n for n in self.cluster.nodes if n.name == fault.target)
        pid = node.process.pid if node.process else None
        node.kill()
        await asyncio.sleep(fault.hold)
        node.start()
        return f"pid {pid} killed, down {fault.hold}s"

    async def _redis_kill(self, fault: Fault) -> str:
        await self.cluster.kill_redis()
        await asyncio.sleep(fault.hold)
        await self.cluster.start_redis()
        return f"down {fault.hold}s"

    async def _redis_pause(self, fault: Fault) -> str:
        pid = self.cluster.redis_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.hold)
        finally:
            os.kill(pid, signal.SIGCONT)
        return f"paused {fault.hold}s"

    async def _postgres_restart(self, fault: Fault) -> str:
        await self.cluster.stop_postgres_now()
        await asyncio.sleep(fault.hold)
        await self.cluster.start_postgres()
        return f"immediate stop, down {fault.hold}s"

    async def _bus_drop(self, fault: Fault) -> str:
        return f"{await self.tap.cut_subscribers()} subscribers cut"

    async def _bus_replay(self, fault: Fault) -> str:
        return f"{await self.tap.replay(self.rng)} old messages published again"
