"""One chaos run from start to verdict: cluster, load and faults, drain, convergence, checks."""

import asyncio
import dataclasses
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from tools.chaos.api import Api
from tools.chaos.check import verdict
from tools.chaos.cluster import Cluster
from tools.chaos.converge import converge
from tools.chaos.db import read_state
from tools.chaos.evidence import attach_request_logs, node_errors
from tools.chaos.faults import Injector, schedule
from tools.chaos.ledger import check_ledger, check_order_effects
from tools.chaos.live import LiveClient
from tools.chaos.load import Load
from tools.chaos.model import Records, Violation
from tools.chaos.report import Report, build
from tools.chaos.tap import Tap

CONVERGE_LIMIT = 2.0  # seconds every view has to match the database
CLEAN_LOAD = 3.0  # seconds of load after the last fault is over
STARTUP_TIMEOUT = 90.0


class SetupError(Exception):
    """The cluster could not be brought up: no verdict is possible."""


@dataclass(frozen=True)
class Options:
    seconds: float = 60.0
    seed: int = 1
    workers: int = 6
    live_per_node: int = 2
    hold_seconds: int = 5
    keep: bool = False


async def run(options: Options) -> Report:
    """Start a cluster in a temporary folder, exercise it, judge it, stop it."""
    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="orderflow-chaos-"))
    os.chmod(folder, 0o755)  # Postgres may run as another account and must reach its files
    cluster = Cluster(folder, hold_seconds=options.hold_seconds)
    try:
        await cluster.start()
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            timeout=httpx.Timeout(5.0, connect=1.0),
            headers=_auth(cluster),
            trust_env=False,
        ) as http:
            late = await cluster.wait_ready(http, STARTUP_TIMEOUT)
            if late:
                tails = "\n".join(line for n in cluster.nodes for line in n.tail(15))
                raise SetupError(f"{', '.join(late)} never became ready:\n{tails}")
            report = await Run(cluster, http, options, began).exercise()
        report.node_errors = {} if report.ok else node_errors(cluster.nodes)
        report.kept = str(folder) if options.keep else None
        return report
    finally:
        cluster.stop()
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)


class Run:
    def __init__(
        self, cluster: Cluster, http: httpx.AsyncClient, options: Options, began: float
    ) -> None:
        self.cluster = cluster
        self.http = http
        self.options = options
        self.began = began
        self.records = Records(origin=time.monotonic())
        self.clients = [
            LiveClient(f"ws-{node.name}-{i + 1}", node, self.records, _auth(cluster))
            for node in cluster.nodes
            for i in range(options.live_per_node)
        ]
        self.load = Load(Api(http, cluster.nodes, self.records), self.clients, options.seed)

    async def exercise(self) -> Report:
        """WebSocket clients and the bus tap run throughout; load and faults, then judge."""
        self.records.marks["start-up"] = time.monotonic()
        await self.load.setup()
        tap = Tap(self.cluster.redis.url)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop), name=c.name) for c in self.clients]
        tasks.append(asyncio.create_task(tap.listen(stop), name="bus tap"))
        watch = self.cluster.watch(self.records.incidents, stop)
        tasks.append(asyncio.create_task(watch, name="node watch"))
        try:
            await _wait_snapshots(self.clients, tasks)
            await self._load_and_faults(tap)
            _raise_if_failed(tasks)
            conn = await asyncpg.connect(self.cluster.postgres.url)  # Postgres has restarted
            try:
                return await self._judge(conn)
            finally:
                await conn.close()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await tap.close()

    async def _load_and_faults(self, tap: Tap) -> None:
        records, options = self.records, self.options
        records.origin = time.monotonic()
        plan = schedule(options.seed, options.seconds, [n.name for n in self.cluster.nodes])
        records.planned = len(plan)
        injector = Injector(self.cluster, tap, self.http, records, options.seed)
        await asyncio.gather(self.load.run(options.workers, self._going()), injector.play(plan))
        records.marks["load and faults"] = time.monotonic()

    def _going(self) -> Callable[[], bool]:
        """Load for `seconds`, and on until the last fault has been over for CLEAN_LOAD:
        after it, no request may fail at all."""
        records, deadline = self.records, self.records.origin + self.options.seconds

        def going() -> bool:
            now = time.monotonic()
            over = records.last_fault_end if len(records.windows) == records.planned else None
            return now < deadline or over is None or now < over + CLEAN_LOAD

        return going

    async def _judge(self, conn: asyncpg.Connection) -> Report:
        """Invariants with holds still pending; drain them; convergence; the full verdict."""
        loaded = await read_state(conn)
        early = check_ledger(loaded) + check_order_effects(loaded)
        await self.load.drain([order.id for order in loaded.orders if order.status == "pending"])
        since = self.records.marks["drain"] = time.monotonic()
        views = await converge(
            conn, self.http, self.cluster.nodes, self.clients, since, CONVERGE_LIMIT * 5
        )
        found = verdict(self.records, await read_state(conn), views, CONVERGE_LIMIT)
        self.records.marks["convergence and checks"] = time.monotonic()
        found = _also_early(early, found)
        options = self.options
        live = self._live_counts()
        report = build(options.seed, options.seconds, self.records, views, found, live, self.began)
        attach_request_logs(report, self.cluster.nodes)
        return report

    def _live_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for client in self.clients:
            counts["connects"] += client.connects
            counts["snapshots"] += client.snapshots
            counts["followed"] += len(client.followed)
            for code, count in client.errors.items():
                counts[f"error {code}"] += count
        return dict(counts)


def _also_early(early: list[Violation], found: list[Violation]) -> list[Violation]:
    """Violations seen while holds were pending, unless the final state shows them too."""
    final = {violation.message for violation in found}
    return [
        dataclasses.replace(v, message=f"{v.message} (when the load stopped)")
        for v in early
        if v.message not in final
    ] + found


async def _wait_snapshots(
    clients: list[LiveClient], tasks: list[asyncio.Task[None]], within: float = 15.0
) -> None:
    deadline = time.monotonic() + within
    while any(client.snapshots == 0 for client in clients):
        _raise_if_failed(tasks)
        if time.monotonic() > deadline:
            missing = [client.name for client in clients if client.snapshots == 0]
            raise SetupError(f"no snapshot on {', '.join(missing)}")
        await asyncio.sleep(0.05)


def _auth(cluster: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.api_key}"} if cluster.api_key else {}


def _raise_if_failed(tasks: list[asyncio.Task[None]]) -> None:
    """A client of ours that crashed would pass for a node's fault: stop the run instead."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"the run's own {task.get_name()} failed") from task.exception()
