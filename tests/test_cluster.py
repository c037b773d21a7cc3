"""`python -m backend.cluster` end to end: start, survive a SIGKILL, restart what
dies, stop cleanly, with credentials it makes on its first start; and its
restart policy on its own."""

import asyncio
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest
from pydantic import SecretStr

from backend import credentials
from backend.auth import keys
from backend.auth.principal import SCOPES, Principal
from backend.backoff import Backoff
from backend.cluster import Cluster
from backend.credentials import Credentials
from backend.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    free_port,
    port_is_free,
    process_cmdline,
    process_running,
    terminate,
)
from backend.node_process import NodeProcess
from backend.restarts import Restarter
from backend.settings import Settings
from database import PostgresDatabase

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ("DATABASE_URL", "REDIS_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")
GENERATED = ("BUS_KEY", "SUPABASE_JWT_SECRET")  # the cluster makes its own
SIGN_IN = re.compile(r"^sign in \(shown this once.*?readable by its owner only\n", re.M | re.S)
STARTUP = 60.0
HEAL = 30.0  # seconds for a restart to be noticed, done and served again
T = TypeVar("T")
pytestmark = pytest.mark.timeout(240)


@dataclass
class Launch:
    """How to start one cluster, and everything it may leave behind."""

    data_dir: Path
    node_ports: list[int]
    pg_port: int
    redis_port: int
    output: Path
    processes: list["subprocess.Popen[bytes]"]

    def start(self, *options: str, **env_vars: str) -> "subprocess.Popen[bytes]":
        command = [sys.executable, "-m", "backend.cluster", "--nodes", str(len(self.node_ports))]
        command += ["--port", str(self.node_ports[0]), "--data-dir", str(self.data_dir)]
        command += ["--pg-port", str(self.pg_port), "--redis-port", str(self.redis_port)]
        command += options
        env = {k: v for k, v in os.environ.items() if k not in (*EXTERNAL, *GENERATED)}
        with self.output.open("ab") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env | env_vars, stdout=out, stderr=out
            )
        self.processes.append(process)
        return process

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def credentials(self) -> Credentials:
        found = credentials.load(self.data_dir)
        assert found is not None, f"no credentials in {self.data_dir}"
        return found

    def admin_key(self) -> str:
        return self.credentials().admin_key

    def show_credentials(self) -> str:
        command = [sys.executable, "-m", "backend.cluster", "--data-dir", str(self.data_dir)]
        command += ["--redis-port", str(self.redis_port), "--show-credentials"]
        env = {k: v for k, v in os.environ.items() if k not in (*EXTERNAL, *GENERATED)}
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def authenticate(self, key: str) -> Principal:
        """The key's principal, from the cluster's own Postgres."""

        async def check() -> Principal:
            db = PostgresDatabase(f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres")
            try:
                await db.connect()
                return await keys.authenticate(db, key)
            finally:
                await db.close()

        return asyncio.run(check())

    def wait_healthy(self, process: "subprocess.Popen[bytes]") -> list[dict[str, object]]:
        deadline = time.monotonic() + STARTUP
        bodies: list[dict[str, object]] = []
        with httpx.Client(timeout=2.0) as client:
            for port in self.node_ports:
                while True:
                    assert process.poll() is None, f"cluster exited early:\n{self.log()}"
                    assert time.monotonic() < deadline, f"no /health on {port}:\n{self.log()}"
                    try:
                        response = client.get(f"http://127.0.0.1:{port}/health")
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    assert response.status_code == 200, response.text
                    bodies.append(response.json())
                    break
        # And the launcher has seen it too: it now watches what it started.
        while self.output.read_text(errors="replace").count("press Ctrl-C") < len(self.processes):
            assert process.poll() is None, f"cluster exited early:\n{self.log()}"
            assert time.monotonic() < deadline, f"no summary from the launcher:\n{self.log()}"
            time.sleep(0.1)
        return bodies

    def postmaster_pid(self) -> int:
        pid_file = self.data_dir / "postgres" / "pgdata" / "postmaster.pid"
        return int(pid_file.read_text().split()[0])

    def redis_pid(self) -> int:
        return int((self.data_dir / "redis" / "redis.pid").read_text())

    def replaced(self, server: Callable[[], int], old: int) -> int | None:
        """The pid of the server that replaced `old` once it runs, else None."""
        try:
            pid = server()
        except (OSError, ValueError, IndexError):  # between pid files
            return None
        return pid if pid != old and process_running(pid) else None

    def recorded_nodes(self) -> list[int]:
        return [int(pid) for pid in (self.data_dir / "nodes.pid").read_text().split()]

    def assert_all_stopped(self, postgres: int, redis: int) -> None:
        ports = [*self.node_ports, self.pg_port, self.redis_port]
        assert [port for port in ports if accepts_connections(port)] == []
        assert not process_running(postgres), "postgres still runs"
        assert not process_running(redis), "redis still runs"
        assert "[cluster] stopped" in self.log()


def node_pids(cluster: "subprocess.Popen[bytes]") -> list[int]:
    children = psutil.Process(cluster.pid).children()
    return [child.pid for child in children if "backend.main:app" in child.cmdline()]


def node_pid(cluster: "subprocess.Popen[bytes]", port: int, old: int = 0) -> int | None:
    """The launcher's node process serving `port` if it runs and is not `old`."""
    for child in psutil.Process(cluster.pid).children():
        command = process_cmdline(child.pid)
        if "backend.main:app" in command and str(port) in command and child.pid != old:
            return child.pid if process_running(child.pid) else None
    return None


def wait_for(probe: Callable[[], T | None], what: str, within: float = HEAL) -> T:
    """Poll `probe` until it returns something other than None (or False)."""
    deadline = time.monotonic() + within
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        time.sleep(0.1)
    return found


def health(port: int) -> object:
    """The body of a 200 from the node's /health, or None."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def adjust(port: int, sku: str, key: str) -> int | None:
    """Restock one unit through the node on `port` with the API key `key`; the new
    version, or None if refused."""
    url = f"http://127.0.0.1:{port}/products/{sku}/adjustments"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        response = httpx.post(
            url, json={"delta": 1, "reason": "restock"}, headers=headers, timeout=5.0
        )
    except httpx.HTTPError:
        return None
    return int(response.json()["version"]) if response.status_code == 200 else None


def a_sku(port: int) -> str | None:
    try:
        items = httpx.get(f"http://127.0.0.1:{port}/products", timeout=2.0).json()["items"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    return str(items[0]["sku"]) if items else None


def version_on(port: int, sku: str) -> int:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/products/{sku}", timeout=2.0)
    except httpx.HTTPError:
        return 0
    return int(response.json()["version"]) if response.status_code == 200 else 0


def carried(source: int, target: int, sku: str, key: str) -> bool:
    """A write on `source` reaches `target` within a second (retried by the caller)."""
    version = adjust(source, sku, key)
    if version is None:
        return False
    deadline = time.monotonic() + 1.0
    while version_on(target, sku) < version:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def redis_reply(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as conn:
        conn.sendall(command)
        return conn.recv(200)


def assert_no_secret_logged(log: str, made: Credentials) -> None:
    """Only the one sign-in text shows a secret: the admin key."""
    (sign_in,) = SIGN_IN.findall(log)
    assert made.admin_key in sign_in
    rest = SIGN_IN.sub("", log)
    for name in ("bus_key", "jwt_secret", "redis_password", "admin_key"):
        assert getattr(made, name) not in rest, f"the {name} is in the log"
    assert made.redis_password not in sign_in
    assert made.bus_key not in sign_in
    assert made.jwt_secret not in sign_in


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pick_ports() -> tuple[list[int], int, int]:
    """Two consecutive ports for the nodes, one for Postgres, one for Redis: all free."""
    while True:
        base, postgres, redis = free_port(), free_port(), free_port()
        if port_is_free(base + 1) and len({base, base + 1, postgres, redis}) == 4:
            return [base, base + 1], postgres, redis


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    dotenv = ROOT / ".env"
    if dotenv.exists() and any(name in dotenv.read_text() for name in EXTERNAL):
        pytest.skip(".env names external servers; this test needs the embedded ones")
    # Outside tmp_path, like conftest's servers: Postgres may run as another account.
    data_dir = Path(tempfile.mkdtemp(prefix="orderflow-cluster-"))
    output = tmp_path / "cluster.log"
    launch = Launch(data_dir, *pick_ports(), output, [])
    yield launch
    # Whatever the outcome, leave nothing running.
    for process in launch.processes:
        if process.poll() is None:
            process.kill()
        process.wait()
    ports = {str(port) for port in launch.node_ports}
    for other in psutil.process_iter():
        command = process_cmdline(other.pid)
        if "backend.main:app" in command and ports.intersection(command):
            terminate(other.pid)
    EmbeddedRedis(data_dir / "redis", launch.redis_port).stop()
    EmbeddedPostgres(data_dir / "postgres", launch.pg_port).stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_cluster_starts_recovers_from_sigkill_and_stops(launch: Launch) -> None:
    first = launch.start()
    bodies = launch.wait_healthy(first)
    assert bodies == [{"status": "ok", "node": "node-1"}, {"status": "ok", "node": "node-2"}]
    postgres, redis, old_nodes = launch.postmaster_pid(), launch.redis_pid(), node_pids(first)
    assert len(old_nodes) == 2
    # Credentials made on the first start: private, shown once, and the key works.
    made = launch.credentials()
    mode = (launch.data_dir / credentials.FILE_NAME).stat().st_mode
    assert mode & 0o777 == 0o600
    assert made.shown
    assert f'curl -H "Authorization: Bearer {made.admin_key}"' in launch.log()
    admin = launch.authenticate(made.admin_key)
    assert (admin.name, admin.scopes) == (credentials.ADMIN_KEY_NAME, frozenset(SCOPES))
    assert redis_reply(launch.redis_port, b"PING\r\n").startswith(b"-NOAUTH")
    first_output = len(launch.log())

    first.kill()  # no cleanup at all: servers and nodes are left running
    first.wait()
    assert process_running(postgres)
    assert process_running(redis)

    second = launch.start()
    # The old nodes still answer /health until the new launcher stops them.
    deadline = time.monotonic() + STARTUP
    while any(process_running(pid) for pid in old_nodes):
        assert second.poll() is None, f"cluster exited early:\n{launch.log()}"
        assert time.monotonic() < deadline, f"leftover nodes still run:\n{launch.log()}"
        time.sleep(0.1)
    bodies = launch.wait_healthy(second)
    assert [body["node"] for body in bodies] == ["node-1", "node-2"]
    assert len(node_pids(second)) == 2
    postgres, redis = launch.postmaster_pid(), launch.redis_pid()
    # The same credentials, not shown again but on demand; the key still works.
    assert launch.credentials() == made
    second_output = launch.log()[first_output:]
    assert f"credentials: {launch.data_dir / credentials.FILE_NAME}" in second_output
    assert made.admin_key not in second_output
    assert f"admin API key, every scope: {made.admin_key}\n" in launch.show_credentials()
    launch.authenticate(made.admin_key)

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, launch.log()
    launch.assert_all_stopped(postgres, redis)
    assert_no_secret_logged(launch.log(), made)


def test_cluster_restarts_a_killed_node_redis_and_postgres(launch: Launch) -> None:
    # Catch-up from the ledger off: a change reaches the other node through Redis or not at all.
    cluster = launch.start(CATCHUP_INTERVAL_SECONDS="3600")
    launch.wait_healthy(cluster)
    first, second = launch.node_ports
    key = launch.admin_key()
    sku = wait_for(lambda: a_sku(first), "node-1 serves the catalog")  # /health came first
    wait_for(lambda: carried(first, second, sku, key), "node-1 to node-2 through Redis")

    old = wait_for(lambda: node_pid(cluster, first), "node-1 runs")
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: node_pid(cluster, first, old), "node-1 restarted")
    body = wait_for(lambda: health(first), "node-1 answers /health again")
    assert body == {"status": "ok", "node": "node-1"}
    wait_for(lambda: new in launch.recorded_nodes(), "nodes.pid names the new node-1")
    assert f"node-1 (pid {old}) was killed by SIGKILL" in launch.log()
    wait_for(lambda: f"node-1 (pid {new}) is back" in launch.log(), "node-1 is back, says the log")

    old = launch.redis_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: launch.replaced(launch.redis_pid, old), "a new Redis")
    assert not psutil.pid_exists(old), "the killed Redis is left a zombie"
    assert redis_reply(launch.redis_port, b"PING\r\n").startswith(b"-NOAUTH")
    wait_for(lambda: carried(first, second, sku, key), "node-1 to node-2 through the new Redis")
    wait_for(lambda: carried(second, first, sku, key), "node-2 to node-1 through the new Redis")
    assert f"Redis (pid {old}) was killed by SIGKILL" in launch.log()

    old = launch.postmaster_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: launch.replaced(launch.postmaster_pid, old), "a new Postgres")
    wait_for(lambda: adjust(first, sku, key), "node-1 writes again")
    wait_for(lambda: adjust(second, sku, key), "node-2 writes again")
    assert f"Postgres (pid {old}) is no longer running" in launch.log()

    postgres, redis = launch.postmaster_pid(), launch.redis_pid()
    cluster.send_signal(signal.SIGTERM)
    assert cluster.wait(timeout=60) == 0, launch.log()
    launch.assert_all_stopped(postgres, redis)
    assert_no_secret_logged(launch.log(), launch.credentials())


def test_sigterm_during_a_backoff_stops_everything_at_once(launch: Launch) -> None:
    launch.node_ports = launch.node_ports[:1]
    cluster = launch.start("--restart-delay", "60", "--restart-delay-max", "60")
    launch.wait_healthy(cluster)
    postgres, redis = launch.postmaster_pid(), launch.redis_pid()
    os.kill(
        wait_for(lambda: node_pid(cluster, launch.node_ports[0]), "node-1 runs"), signal.SIGKILL
    )
    wait_for(lambda: "restarting it in" in launch.log(), "the launcher waits to restart node-1")

    asked = time.monotonic()
    cluster.send_signal(signal.SIGTERM)
    assert cluster.wait(timeout=30) == 0, launch.log()
    assert time.monotonic() - asked < 15, "the launcher sat out its backoff"
    assert "started again" not in launch.log()
    launch.assert_all_stopped(postgres, redis)


def test_backoff_doubles_with_jitter_up_to_its_ceiling_and_starts_over_after_a_good_run() -> None:
    backoff = Backoff(first=0.5, most=30.0, stable=60.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.delay(uptime=0.1) for _ in range(9)]
    for delay, slot in zip(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert 0.8 * slot <= delay <= slot
    assert len(set(delays[-3:])) == 3, "no jitter at the ceiling"
    assert 24 <= backoff.delay(uptime=59.0) <= 30, "a short run is one more failure"
    assert 0.4 <= backoff.delay(uptime=60.0) <= 0.5, "a good run starts over"
    assert 0.8 <= backoff.delay(uptime=0.0) <= 1.0


def announced(caplog: pytest.LogCaptureFixture) -> list[tuple[float, float]]:
    """(when, delay) of every 'restarting it in N s' the supervisor logged."""
    found = []
    for record in caplog.records:
        match = re.search(r"restarting it in ([\d.]+) s", record.getMessage())
        if match:
            found.append((record.created, float(match[1])))
    return found


def supervise(supervisor: Restarter, until: Callable[[], bool], within: float) -> None:
    """The launcher's loop, until `until()` holds."""
    deadline = time.monotonic() + within
    while not until():
        assert time.monotonic() < deadline, "the supervisor did not get there in time"
        supervisor.check()
        time.sleep(supervisor.pause())


def test_a_node_that_dies_at_once_is_restarted_ever_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "backend.cluster")
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    env |= {"DB_POOL_MIN": "2", "DB_POOL_MAX": "1"}  # refused at start-up, every time
    port = free_port()
    node = NodeProcess("node-x", "127.0.0.1", port, f"http://127.0.0.1:{port}", env)
    node.start()
    supervisor = Restarter([node], lambda: Backoff(first=0.2, most=0.8, rng=random.Random(3)))
    try:
        supervise(supervisor, lambda: len(announced(caplog)) >= 4, within=60)
    finally:
        node.stop()
    deaths = announced(caplog)
    assert "exited with code 1" in caplog.text
    delays = [delay for _, delay in deaths]
    assert delays[0] < delays[1] < delays[2], delays
    assert delays[3] <= 0.8
    starts = [r.created for r in caplog.records if "started again" in r.getMessage()]
    for (died, delay), started in zip(deaths, starts, strict=False):
        assert started - died >= delay - 0.01, "restarted before its backoff was over"


def test_a_node_whose_port_is_taken_is_retried_ever_later_and_never_spawned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "backend.cluster")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = NodeProcess("node-x", "127.0.0.1", port, f"http://127.0.0.1:{port}", {})
        supervisor = Restarter([node], lambda: Backoff(first=0.05, most=0.4, rng=random.Random(5)))
        started = time.monotonic()
        supervise(supervisor, lambda: len(announced(caplog)) >= 6, within=10)
        elapsed = time.monotonic() - started
    assert node.process is None
    delays = [delay for _, delay in announced(caplog)]
    assert elapsed >= sum(delays[:5]) - 0.03, "tried again before its wait was over"
    assert delays[:4] == sorted(delays[:4])  # 0.05, 0.1, 0.2, 0.4, 0.4, ...
    assert 0.04 <= delays[0] <= 0.05
    assert all(0.32 <= delay <= 0.4 for delay in delays[4:])
    assert f"node-x could not start: node-x: port {port}" in caplog.text


def test_external_servers_are_not_the_launchers_to_restart(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        database_url=SecretStr("postgresql://postgres@127.0.0.1:1/postgres"),
        redis_url="redis://127.0.0.1:1/0",
    )
    cluster = Cluster(Namespace(data_dir=tmp_path, pg_port=1, redis_port=1), settings)
    cluster.start_postgres()
    cluster.start_redis()
    assert (cluster.postgres, cluster.redis) == (None, None)
    assert cluster.supervised() == []
