"""Measure a cluster: order throughput and node-to-node propagation latency.

By default it starts its own embedded cluster (2 nodes) in a temporary folder
and stops it afterwards; `--url` (repeatable) measures running nodes instead.
Every loop is bounded in count and time and targets loopback only. Writes send
an API key: the own cluster's admin key, or with `--url` the one `--key` gives
(by default the admin key of `scripts/run`'s cluster in .data).

    scripts/bench                      # throughput + propagation, own cluster
    scripts/bench --url http://127.0.0.1:8001 --url http://127.0.0.1:8002
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
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
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import credentials  # noqa: E402
from backend.embedded import free_port  # noqa: E402

STARTUP = 120.0  # seconds for the own cluster to write its credentials


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def describe(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
        f"max {max(ms):.1f} ms (n={len(ms)})"
    )


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def admin_key(data_dir: Path) -> str | None:
    found = credentials.load(data_dir)
    return found.admin_key if found is not None else None


def wait_admin_key(data_dir: Path, process: "subprocess.Popen[bytes]") -> str:
    """The own cluster's admin key, once it has written it (before it starts its nodes)."""
    deadline = time.monotonic() + STARTUP
    while (key := admin_key(data_dir)) is None:
        if process.poll() is not None:
            raise SystemExit("the cluster exited before it made its credentials")
        if time.monotonic() > deadline:
            raise SystemExit("the cluster made no credentials in time")
        time.sleep(0.1)
    return key


@contextlib.contextmanager
def own_cluster(nodes: int) -> Iterator[tuple[list[str], str]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orderflow-bench-") as data:
        os.chmod(data, 0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env["LOG_LEVEL"] = "WARNING"
        env["RATE_LIMIT_WRITES_PER_MINUTE"] = "0"  # it measures the nodes, not the limit
        command = [
            sys.executable, "-m", "backend.cluster", "--nodes", str(nodes),
            "--port", str(port), "--pg-port", str(free_port()),
            "--redis-port", str(free_port()), "--data-dir", data, "--no-seed",
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            key = wait_admin_key(Path(data), process)
            yield [f"http://127.0.0.1:{port + i}" for i in range(nodes)], key
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


async def wait_ready(urls: list[str]) -> None:
    async with httpx.AsyncClient() as client:
        for url in urls:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"{url} did not become ready")


class Connection:
    """A bare keep-alive HTTP/1.1 connection: the load generator must cost far less
    than the server it measures, and on two cores a full client library does not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "Connection":
        parsed = urlsplit(url)
        return cls(*await asyncio.open_connection(parsed.hostname, parsed.port))

    async def post(self, path: str, body: bytes, headers: str = "") -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def throughput(
    urls: list[str], key: str | None, skus: int, workers: int, seconds: float
) -> None:
    async with httpx.AsyncClient(base_url=urls[0], timeout=30, headers=bearer(key)) as admin:
        names = [f"BENCH-{uuid.uuid4().hex[:6]}-{i}" for i in range(skus)]
        for name in names:
            body = {"sku": name, "name": name, "price_cents": 999, "on_hand": 1_000_000}
            (await admin.post("/products", json=body)).raise_for_status()
    latencies: list[float] = []
    refused = 0
    deadline = time.monotonic() + seconds
    auth = "".join(f"{name}: {value}\r\n" for name, value in bearer(key).items())

    async def worker(index: int) -> None:
        nonlocal refused
        rng = random.Random(index)
        connection = await Connection.open(urls[index % len(urls)])
        try:
            while time.monotonic() < deadline:
                lines = [{"sku": sku, "quantity": 1} for sku in rng.sample(names, 2)]
                started = time.perf_counter()
                status, _ = await connection.post(
                    "/orders",
                    json.dumps({"items": lines}).encode(),
                    f"Idempotency-Key: {uuid.uuid4().hex}\r\n{auth}",
                )
                latencies.append(time.perf_counter() - started)
                refused += status != 201
        finally:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    elapsed = time.monotonic() - started
    print(
        f"orders: {len(latencies) / elapsed:.0f} orders/s over {elapsed:.1f} s "
        f"({workers} concurrent connections over {len(urls)} nodes, 2 lines each, "
        f"{refused} refused); latency {describe(latencies)}"
    )


async def propagation(urls: list[str], key: str | None, changes: int) -> None:
    writer_url, reader_url = urls[0], urls[-1]
    sku = f"PROP-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=writer_url, timeout=30, headers=bearer(key)) as writer:
        body = {"sku": sku, "name": sku, "price_cents": 100, "on_hand": 1}
        (await writer.post("/products", json=body)).raise_for_status()
        ws_url = reader_url.replace("http://", "ws://") + f"/ws?skus={sku}"
        async with connect(ws_url) as ws:
            json.loads(await ws.recv())  # snapshot
            lags: list[float] = []
            for _ in range(changes):
                response = await writer.post(
                    f"/products/{sku}/adjustments", json={"delta": 1, "reason": "restock"}
                )
                response.raise_for_status()
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads(await ws.recv())
                        if message["type"] == "stock":
                            break
                received = time.time()
                committed = datetime.fromisoformat(message["committed_at"]).timestamp()
                lags.append(received - committed)
    print(f"propagation {writer_url} commit -> WebSocket client on {reader_url}: {describe(lags)}")


async def run(args: argparse.Namespace, urls: list[str], key: str | None) -> None:
    await wait_ready(urls)
    await propagation(urls, key, args.changes)
    await throughput(urls, key, args.skus, args.workers, args.seconds)
    await propagation(urls, key, args.changes)  # once more, with a busier database behind it


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", action="append", help="a running node (repeat for several)")
    parser.add_argument(
        "--key", help="with --url: the API key for writes (default: the admin key in .data)"
    )
    parser.add_argument("--nodes", type=int, default=2, help="nodes of the own cluster")
    parser.add_argument("--workers", type=int, default=32, help="concurrent order clients")
    parser.add_argument("--seconds", type=float, default=10, help="length of the order run")
    parser.add_argument("--skus", type=int, default=50, help="products the orders spread over")
    parser.add_argument("--changes", type=int, default=200, help="changes timed for propagation")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args, args.url, args.key or admin_key(ROOT / ".data")))
    else:
        with own_cluster(args.nodes) as (urls, key):
            asyncio.run(run(args, urls, key))


if __name__ == "__main__":
    main()
