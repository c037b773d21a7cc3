"""Measure what WebSocket clients that never read cost a node and its other clients.

By default it starts its own one-node cluster (embedded Postgres and Redis in a
temporary folder, like scripts/bench); `--url` with `--pid` (and `--key`)
measures a running node instead. One normal client reads all the time and
times each change from commit to arrival: alone, then with `--clients` more
connections that finish the handshake like a browser and never read a byte
again (nor answer a ping), then once more after `--fill-most` untimed changes.
It reports those p50/p99, the node's CPU time for each phase and its RSS
before, with the crowd, after it closed, and for `--waves` more crowds.

    .venv/bin/python scripts/ws_soak.py --clients 2000
    .venv/bin/python scripts/ws_soak.py --node-env UVICORN_WS_PER_MESSAGE_DEFLATE=false
    .venv/bin/python scripts/ws_soak.py --url http://127.0.0.1:8001 --pid 1234 --key ofk_...

A benchmark, not a test: on a shared machine its numbers move with the load.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import credentials  # noqa: E402
from backend.embedded import free_port  # noqa: E402

MIB = 1024 * 1024
STARTUP = 120.0  # seconds for the own cluster to write its credentials


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def describe(lags: list[float]) -> str:
    ms = [lag * 1000 for lag in lags]
    return f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms (n={len(ms)})"


def admin_key(data_dir: Path) -> str | None:
    found = credentials.load(data_dir)
    return found.admin_key if found is not None else None


def wait_admin_key(data_dir: Path, process: "subprocess.Popen[bytes]") -> str:
    """The own cluster's admin key, once it has written it (before it starts its node)."""
    deadline = time.monotonic() + STARTUP
    while (key := admin_key(data_dir)) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the cluster made no credentials")
        time.sleep(0.1)
    return key


@contextlib.contextmanager
def own_node(node_env: dict[str, str]) -> Iterator[tuple[str, int, str]]:
    """A one-node cluster started the way scripts/run starts it; yield its URL, its pid
    and its admin key. Every client comes from one address: the node lets it open many."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orderflow-soak-") as data:
        os.chmod(data, 0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env |= {"LOG_LEVEL": "WARNING", "UVICORN_LOG_LEVEL": "warning"}
        env["RATE_LIMIT_WRITES_PER_MINUTE"] = "0"  # it measures the node, not the limits
        env["WS_MAX_PER_ADDRESS"] = "100000"
        env |= node_env
        command = [
            sys.executable, "-m", "backend.cluster", "--nodes", "1", "--port", str(port),
            "--pg-port", str(free_port()), "--redis-port", str(free_port()),
            "--data-dir", data, "--no-seed",
        ]  # fmt: skip
        cluster = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            key = wait_admin_key(Path(data), cluster)
            yield f"http://127.0.0.1:{port}", node_pid(cluster.pid, port), key
        finally:
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(timeout=60)


def node_pid(cluster_pid: int, port: int, timeout: float = 60) -> int:
    """The cluster's uvicorn child serving `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(cluster_pid).children():
            with contextlib.suppress(psutil.Error):
                if "uvicorn" in child.cmdline() and str(port) in child.cmdline():
                    return child.pid
        time.sleep(0.2)
    raise SystemExit("the cluster started no node")


async def wait_ready(client: httpx.AsyncClient) -> None:
    for _ in range(600):
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/ready")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise SystemExit("the node did not become ready")


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise SystemExit(f"/metrics has no {name}")


async def silent_client(url: str, rcvbuf: int | None) -> socket.socket:
    """Handshake like a browser (offering permessage-deflate), then never read again."""
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    except BaseException:
        sock.close()
        raise
    return sock


async def open_crowd(url: str, args: argparse.Namespace) -> list[socket.socket]:
    gate = asyncio.Semaphore(100)

    async def one() -> socket.socket:
        async with gate:
            return await silent_client(url, args.rcvbuf)

    return list(await asyncio.gather(*(one() for _ in range(args.clients))))


class Listener:
    """The normal client: reads all the time (a reader that stops would be a slow client
    itself) and notes each change's lag from commit to arrival."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.lags: dict[tuple[str, int], float] = {}
        self.news = asyncio.Event()
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message["type"] == "stock":
                committed = datetime.fromisoformat(message["committed_at"]).timestamp()
                self.lags[message["sku"], message["version"]] = time.time() - committed
                self.news.set()

    async def lag(self, sku: str, version: int) -> float:
        while (sku, version) not in self.lags:
            self.news.clear()
            await self.news.wait()
        return self.lags.pop((sku, version))


async def timed_changes(
    http: httpx.AsyncClient, listener: Listener, skus: list[str], changes: int
) -> list[float]:
    """Make changes one at a time; each one's lag from commit to the normal client."""
    lags: list[float] = []
    for i in range(changes):
        sku = skus[i % len(skus)]
        response = await http.post(
            f"/products/{sku}/adjustments", json={"delta": 1, "reason": "restock"}
        )
        response.raise_for_status()
        async with asyncio.timeout(30):
            lags.append(await listener.lag(sku, response.json()["version"]))
    return lags


async def settle(http: httpx.AsyncClient, clients: int, within: float = 60) -> float:
    """Wait until the node counts `clients` WebSocket clients; return how long it took."""
    started = time.monotonic()
    while await gauge(http, "orderflow_websocket_clients") != clients:
        if time.monotonic() - started > within:
            raise SystemExit(f"the node did not get back to {clients} client(s) in {within}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def fill(http: httpx.AsyncClient, skus: list[str], clients: int, most: int) -> int:
    """Make changes until the silent clients' sockets are full and their mailboxes
    coalesce (about one coalesced change per client), or `most` changes; return how many."""
    start = await gauge(http, "orderflow_websocket_coalesced_total")
    for i in range(most):
        sku = skus[i % len(skus)]
        response = await http.post(
            f"/products/{sku}/adjustments", json={"delta": 1, "reason": "restock"}
        )
        response.raise_for_status()
        if i % 50 == 49:
            coalesced = await gauge(http, "orderflow_websocket_coalesced_total")
            if coalesced - start >= clients:
                return i + 1
    return most


class Report:
    """The node's RSS and CPU time, read as the phases go, and the lines to print."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.process = psutil.Process(pid)
        self.cpu_mark = self.cpu()
        self.lines: list[str] = []
        self.memory: list[tuple[str, float]] = []

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def lap(self) -> float:
        """CPU seconds since the last lap."""
        now = self.cpu()
        spent, self.cpu_mark = now - self.cpu_mark, now
        return spent

    def rss(self, when: str) -> float:
        value = float(self.process.memory_info().rss) / MIB
        self.memory.append((when, value))
        return value

    def phase(self, name: str, lags: list[float]) -> None:
        self.lines.append(f"  {name:<34} {describe(lags)}, node CPU {self.lap():.1f} s")

    def print(self, args: argparse.Namespace) -> None:
        print(
            f"node pid {self.pid}, {args.products} products, {args.changes} timed changes a phase"
        )
        print("\n".join(self.lines))
        print("  RSS MiB: " + ", ".join(f"{when} {value:.0f}" for when, value in self.memory))


async def create_products(http: httpx.AsyncClient, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    skus = [f"SOAK-{tag}-{i:03d}" for i in range(count)]
    for sku in skus:
        body = {"sku": sku, "name": sku, "price_cents": 999, "on_hand": 1000}
        (await http.post("/products", json=body)).raise_for_status()
    return skus


async def close_crowd(http: httpx.AsyncClient, crowd: list[socket.socket]) -> None:
    for sock in crowd:
        sock.close()
    await settle(http, 1)
    await asyncio.sleep(2)  # what the allocator gives back, it gives back by then


async def first_wave(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    listener: Listener,
    skus: list[str],
    report: Report,
) -> None:
    """Time changes with the crowd fresh, then after many more changes."""
    before = report.memory[-1][1]
    started = time.monotonic()
    crowd = await open_crowd(str(http.base_url), args)
    report.lines.append(
        f"  {args.clients} silent clients opened in {time.monotonic() - started:.1f} s"
    )
    await settle(http, args.clients + 1)
    idle = report.rss("crowd idle")
    report.lines.append(f"  {(idle - before) * 1024 / args.clients:.1f} KiB per idle client")
    report.lap()
    report.phase("with them", await timed_changes(http, listener, skus, args.changes))
    started = time.monotonic()
    filled = await fill(http, skus, args.clients, args.fill_most)
    report.lines.append(
        f"  {filled} untimed changes: {time.monotonic() - started:.1f} s, "
        f"node CPU {report.lap():.1f} s"
    )
    held = int(await gauge(http, "orderflow_websocket_clients")) - 1
    report.phase(
        f"then, {held} silent held", await timed_changes(http, listener, skus, args.changes)
    )
    report.rss("after the changes")
    await close_crowd(http, crowd)
    report.rss("closed")


async def run(args: argparse.Namespace, url: str, pid: int, key: str | None) -> None:
    report = Report(pid)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
        await wait_ready(http)
        skus = await create_products(http, args.products)
        async with connect(url.replace("http://", "ws://") + "/ws", max_size=None) as ws:
            json.loads(await ws.recv())  # snapshot
            listener = Listener(ws)
            try:
                await timed_changes(http, listener, skus, 20)  # warm up
                report.rss("before")
                report.lap()
                report.phase("alone", await timed_changes(http, listener, skus, args.changes))
                await first_wave(args, http, listener, skus, report)
                for wave in range(2, args.waves + 1):
                    crowd = await open_crowd(url, args)
                    await settle(http, args.clients + 1)
                    report.rss(f"wave {wave} open")
                    await close_crowd(http, crowd)
                    report.rss(f"wave {wave} closed")
            finally:
                listener.task.cancel()
    report.print(args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running node (needs --pid)")
    parser.add_argument("--pid", type=int, help="that node's process id, for RSS and CPU")
    parser.add_argument(
        "--key", help="with --url: an API key that may write the catalog and read /metrics"
    )
    parser.add_argument("--clients", type=int, default=2000, help="silent clients")
    parser.add_argument("--changes", type=int, default=200, help="timed changes per phase")
    parser.add_argument("--products", type=int, default=100, help="products created")
    parser.add_argument("--rcvbuf", type=int, help="silent clients' SO_RCVBUF, bytes")
    parser.add_argument(
        "--fill-most", type=int, default=1000, help="most untimed changes to fill their sockets"
    )
    parser.add_argument(
        "--waves", type=int, default=2, help="times the crowd comes (later waves: RSS only)"
    )
    parser.add_argument(
        "--node-env", action="append", default=[], metavar="KEY=VALUE",
        help="environment of the own node, e.g. UVICORN_WS_PER_MESSAGE_DEFLATE=false",
    )  # fmt: skip
    args = parser.parse_args()
    if bool(args.url) != bool(args.pid):
        parser.error("--url and --pid go together")
    if args.url:
        asyncio.run(run(args, args.url, args.pid, args.key))
        return
    node_env = dict(item.split("=", 1) for item in args.node_env)
    with own_node(node_env) as (url, pid, key):
        asyncio.run(run(args, url, pid, key))


if __name__ == "__main__":
    main()
