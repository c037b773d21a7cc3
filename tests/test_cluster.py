"""`python -m backend.cluster` end to end: start, survive a SIGKILL, stop cleanly."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from backend.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    free_port,
    port_is_free,
    process_cmdline,
    process_running,
    terminate,
)

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ("DATABASE_URL", "REDIS_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")
STARTUP = 60.0
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

    def start(self) -> "subprocess.Popen[bytes]":
        command = [sys.executable, "-m", "backend.cluster", "--nodes", str(len(self.node_ports))]
        command += ["--port", str(self.node_ports[0]), "--data-dir", str(self.data_dir)]
        command += ["--pg-port", str(self.pg_port), "--redis-port", str(self.redis_port)]
        env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
        with self.output.open("ab") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        self.processes.append(process)
        return process

    def log(self) -> str:
        return self.output.read_text(errors="replace")[-6000:]

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
        return bodies

    def postmaster_pid(self) -> int:
        pid_file = self.data_dir / "postgres" / "pgdata" / "postmaster.pid"
        return int(pid_file.read_text().split()[0])

    def redis_pid(self) -> int:
        return int((self.data_dir / "redis" / "redis.pid").read_text())


def node_pids(cluster: "subprocess.Popen[bytes]") -> list[int]:
    children = psutil.Process(cluster.pid).children()
    return [child.pid for child in children if "backend.main:app" in child.cmdline()]


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

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, launch.log()
    ports = [*launch.node_ports, launch.pg_port, launch.redis_port]
    assert [port for port in ports if accepts_connections(port)] == []
    assert not process_running(postgres), "postgres still runs"
    assert not process_running(redis), "redis still runs"
    assert "[cluster] stopped" in launch.log()
