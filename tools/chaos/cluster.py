"""The run's own cluster: an embedded Postgres and Redis and N uvicorn nodes, all on
loopback ports of a temporary folder, and the means to kill, pause and restart them.

Nodes are plain subprocesses (not `backend.cluster`): the run decides when one
dies and when it comes back, and a node that dies on its own is a finding.
Each node's stderr goes to `node-N.log` in the folder, across restarts.
"""

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from backend import migrate
from backend.embedded import (
    HOST,
    EmbeddedPostgres,
    EmbeddedRedis,
    free_port,
    process_running,
)
from backend.node_process import uvicorn_command
from tools.chaos.model import Violation

_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")  # nothing else of ours leaks in


@dataclass
class NodeProcess:
    name: str
    port: int
    log: Path
    env: dict[str, str]
    cwd: Path
    process: "subprocess.Popen[bytes] | None" = None
    down_on_purpose: bool = False
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self) -> None:
        command = uvicorn_command(HOST, self.port)
        with self.log.open("ab") as out:
            out.write(f"--- chaos: starting {self.name} at {time.time():.3f}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        self.down_on_purpose = False
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to clients, connections cut mid-request."""
        self.down_on_purpose = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def exit_code(self) -> int | None:
        """The code of a node that exited without being told to, else None."""
        if self.down_on_purpose or self.process is None:
            return None
        return self.process.poll()

    def stop(self) -> None:
        self.down_on_purpose = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 20) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


@dataclass
class Cluster:
    folder: Path
    size: int = 3
    hold_seconds: int = 5
    postgres: EmbeddedPostgres = field(init=False)
    redis: EmbeddedRedis = field(init=False)
    nodes: list[NodeProcess] = field(init=False)
    bus_key: str = field(init=False, default_factory=lambda: secrets.token_hex(32))
    api_key: str | None = field(init=False, default=None)  # every scope, when keys exist

    def __post_init__(self) -> None:
        ports = _distinct_ports(self.size + 2)
        # Durable: an immediate stop must lose no acknowledged commit (see `start`).
        self.postgres = EmbeddedPostgres(self.folder / "postgres", ports[0], durable=True)
        self.redis = EmbeddedRedis(self.folder / "redis", ports[1])
        self.nodes = [self._node(i, port) for i, port in enumerate(ports[2:])]

    def _node(self, index: int, port: int) -> NodeProcess:
        name = f"node-{index + 1}"
        env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        env |= {
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "NODE_ID": name,
            "HOLD_SECONDS": str(self.hold_seconds),
            "LOG_LEVEL": "INFO",
            "BUS_KEY": self.bus_key,
            "RATE_LIMIT_WRITES_PER_MINUTE": "0",  # the load is the point, not a limit on it
        }
        return NodeProcess(name, port, self.folder / f"{name}.log", env, self.folder)

    async def start(self) -> None:
        """Nodes first: they must come up before their database and Redis answer (and
        their imports overlap Postgres's initdb)."""
        await asyncio.to_thread(self.redis.start)
        for node in self.nodes:
            node.start()
        await asyncio.to_thread(self.postgres.start)
        await self._prepare_database()

    async def _prepare_database(self) -> None:
        conn = await asyncpg.connect(self.postgres.url)
        try:
            # Without fsync a crash of the machine could lose commits, a crash of Postgres
            # cannot: WAL reaches the kernel at every commit (synchronous_commit stays on).
            await conn.execute("alter system set fsync = off")
            await conn.execute("alter system set full_page_writes = off")
            await conn.execute("select pg_reload_conf()")
            await migrate.migrate(conn)
            self.api_key = await _make_api_key(conn)
        finally:
            await conn.close()

    def stop(self) -> None:
        """Nodes, then Redis, then Postgres; whatever state the faults left them in."""
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.redis_pid(), signal.SIGCONT)
        for node in self.nodes:
            node.stop()
        self.redis.stop()
        self.postgres.stop()

    def redis_pid(self) -> int:
        return int(self.redis.pid_file.read_text().strip())

    def postgres_pid(self) -> int:
        return int((self.postgres.pgdata / "postmaster.pid").read_text().split()[0])

    async def kill_redis(self) -> None:
        pid = self.redis_pid()
        os.kill(pid, signal.SIGKILL)
        await _wait_gone(pid)

    async def start_redis(self) -> None:
        await asyncio.to_thread(self.redis.start)

    async def stop_postgres_now(self) -> None:
        """Immediate shutdown (SIGQUIT): no checkpoint, every connection cut."""
        pid = self.postgres_pid()
        os.kill(pid, signal.SIGQUIT)
        await _wait_gone(pid)

    async def start_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.start)

    async def wait_ready(self, client: httpx.AsyncClient, within: float) -> list[str]:
        """Wait until every node answers /ready 200; return the names of those that did not."""
        results = await asyncio.gather(*(_ready(client, n, within) for n in self.nodes))
        return [node.name for node, ok in zip(self.nodes, results, strict=True) if not ok]

    async def watch(self, incidents: list[Violation], stop: asyncio.Event) -> None:
        """A node that exits on its own is a finding; start it again (at most 3 times)."""
        while not stop.is_set():
            for node in self.nodes:
                code = node.exit_code()
                if code is not None:
                    message = f"{node.name} exited by itself with code {code}"
                    incidents.append(Violation("node", message, tuple(node.tail())))
                    if node.starts <= 3:
                        node.start()
                    else:
                        node.down_on_purpose = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def _make_api_key(conn: asyncpg.Connection) -> str | None:
    """A key with every scope, made the way `backend.auth.keys` makes one: writes need it."""
    if await conn.fetchval("select to_regproc('public.create_api_key')") is None:
        return None
    from backend.auth import keys  # only where the database knows keys

    token = keys.generate()
    scopes = await conn.fetchval("select private.api_key_scopes()")
    await conn.fetchval(
        "select public.create_api_key($1, $2, $3, $4)",
        keys.parse(token),
        keys.hash_key(token),
        "chaos",
        scopes,
    )
    return token


def _distinct_ports(count: int) -> list[int]:
    ports: set[int] = set()
    for _ in range(100 * count):
        ports.add(free_port())
        if len(ports) == count:
            return sorted(ports)
    raise RuntimeError("no free ports")


async def _ready(client: httpx.AsyncClient, node: NodeProcess, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(f"{node.url}/ready", timeout=2.0)).status_code == 200:
                return True
        await asyncio.sleep(0.1)
    return False


async def _wait_gone(pid: int, within: float = 30.0) -> None:
    for _ in range(int(within / 0.02)):
        if not process_running(pid):
            return
        await asyncio.sleep(0.02)
