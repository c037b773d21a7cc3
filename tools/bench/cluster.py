"""The run's own servers: an embedded Postgres and Redis, and uvicorn processes
(nodes and anchors) started and stopped as the scenarios need them.

Everything lives in one temporary folder; every process started here is
stopped by `close`, whatever happened. Postgres runs as `scripts/run` runs it
(durable); nodes run with the flags `scripts/run` gives them and no rate
limit, since the load is the point. Servers and their logs are under the
folder; their stdout and stderr go to `<name>.log` there.
"""

import asyncio
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from backend import credentials, migrate
from backend.auth import mint
from backend.credentials import Credentials
from backend.embedded import HOST, EmbeddedPostgres, EmbeddedRedis, free_port
from backend.node_process import APP, uvicorn_command
from backend.settings import Settings
from tools.bench import BenchError, child

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POOL = Settings.model_fields["db_pool_max"].default
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")  # nothing else of ours leaks in


@dataclass
class Server:
    """One uvicorn process serving `app` on a loopback port, with a node's flags."""

    name: str
    app: str
    port: int
    env: dict[str, str]
    folder: Path
    ready_path: str = "/ready"
    factory: bool = False
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def start(self) -> None:
        command = uvicorn_command(HOST, self.port, self.app, factory=self.factory)
        with (self.folder / f"{self.name}.log").open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=out,
            )  # fmt: skip

    async def wait_ready(self, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise BenchError(f"{self.name} exited; see {self.log_tail()}")
                try:
                    if (await client.get(self.url + self.ready_path)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise BenchError(f"{self.name} was not ready within {within:.0f} s; {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.folder / f"{self.name}.log"
        try:
            lines = path.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            lines = []
        return f"{path}: " + " | ".join(lines)

    @property
    def pid(self) -> int:
        return child.pid_of(self.process, self.name)

    def rss(self) -> int:
        return child.rss(self.pid)

    def cpu(self) -> float:
        return child.cpu(self.pid)

    def stop(self) -> None:
        child.stop(self.process, timeout=15)


@dataclass
class Cluster:
    folder: Path
    pool: int = DEFAULT_POOL
    credentials: Credentials = field(default_factory=credentials.generate)
    servers: list[Server] = field(default_factory=list)
    postgres: EmbeddedPostgres = field(init=False)
    redis: EmbeddedRedis = field(init=False)

    def __post_init__(self) -> None:
        self.postgres = EmbeddedPostgres(self.folder / "postgres", free_port())
        password = self.credentials.redis_password
        self.redis = EmbeddedRedis(self.folder / "redis", free_port(), password=password)

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def admin_key(self) -> str:
        return self.credentials.admin_key

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        await asyncio.to_thread(self.postgres.start)
        conn = await asyncpg.connect(self.database_url)
        try:
            # Commit times, for propagation measured from the commit itself: a change
            # carries its transaction's start, which waits on locks and the WAL flush.
            await conn.execute("alter system set track_commit_timestamp = on")
        finally:
            await conn.close()
        await asyncio.to_thread(self.postgres.stop)
        await asyncio.to_thread(self.postgres.start)
        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        self.credentials = await credentials.store_admin_key(
            self.database_url, self.folder, self.credentials
        )

    def base_env(self) -> dict[str, str]:
        return {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}

    def node(self, name: str) -> Server:
        """A node (not started); the same name is the same NODE_ID."""
        env = self.base_env() | {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "NODE_ID": name,
            "BUS_KEY": self.credentials.bus_key,
            "SUPABASE_JWT_SECRET": self.credentials.jwt_secret,
            "LOG_LEVEL": "WARNING",
            "DB_POOL_MAX": str(self.pool),
            "RATE_LIMIT_WRITES_PER_MINUTE": "0",  # it measures the node, not the limit
            "WS_MAX_PER_ADDRESS": "100000",  # every client comes from 127.0.0.1
            "HOLD_SECONDS": "86400",  # no hold expires during a run: stock only grows reserved
        }
        return self.server(Server(name, APP, free_port(), env, self.folder))

    def server(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    async def start_nodes(self, names: list[str]) -> list[Server]:
        nodes = [self.node(name) for name in names]
        for node in nodes:
            node.start()
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        return nodes

    async def stop(self, *servers: Server) -> None:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))
        for server in servers:
            if server in self.servers:
                self.servers.remove(server)

    def customer_token(self, minutes: int = 180) -> str:
        """A customer's access token, signed as Supabase Auth signs them."""
        sub = str(uuid.uuid4())
        payload = mint.claims(sub, role=None, email="", minutes=minutes, issuer=None)
        return mint.mint(self.credentials.jwt_secret, payload)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    def close(self) -> None:
        """Every server started here, then Redis and Postgres."""
        for server in self.servers:
            server.stop()
        self.servers.clear()
        self.redis.stop()
        self.postgres.stop()
