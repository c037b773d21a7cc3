"""Measure propagation under a sustained write rate: commit to WebSocket client, on every node.

It starts its own cluster (embedded Postgres and Redis in a temporary folder,
`--nodes` nodes), opens `--clients` WebSocket clients per node, and writes
`--rate` stock changes a second for `--seconds` through the first node. On
each node one timed client decodes every frame (a `batch` as its changes) and
notes each change's lag from `committed_at` to arrival and every change it
never got; the other clients read and drop the bytes, as idle browsers do.
Each node's timed client runs in a process of its own, so that decoding is not
the bottleneck. It prints p50/p99 lag per node, the changes missed, the write
rate reached and each node's CPU. `--profile` records a py-spy profile of the
last node while the writer runs (`py-spy record --format raw`: collapsed
stacks, one a line, for `--top` or a flame graph tool).

    .venv/bin/python scripts/ws_propagation.py --rate 500 --clients 100
    .venv/bin/python scripts/ws_propagation.py --rate 500 --profile /tmp/node3.txt

A benchmark, not a test: on a shared machine its numbers move with the load.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
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
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ws_soak import node_pid, percentile, wait_admin_key  # noqa: E402

from backend.embedded import free_port  # noqa: E402


@contextlib.contextmanager
def own_cluster(nodes: int) -> Iterator[tuple[list[str], list[int], str]]:
    """A cluster started the way scripts/run starts it: its URLs, node pids and admin key."""
    port = free_port()
    while any(not _free(port + i) for i in range(nodes)):
        port = free_port()
    with tempfile.TemporaryDirectory(prefix="orderflow-propagation-") as data:
        os.chmod(data, 0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env |= {"LOG_LEVEL": "WARNING", "UVICORN_LOG_LEVEL": "warning"}
        env |= {"RATE_LIMIT_WRITES_PER_MINUTE": "0", "WS_MAX_PER_ADDRESS": "100000"}
        command = [
            sys.executable, "-m", "backend.cluster", "--nodes", str(nodes), "--port", str(port),
            "--pg-port", str(free_port()), "--redis-port", str(free_port()),
            "--data-dir", data, "--no-seed",
        ]  # fmt: skip
        cluster = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            key = wait_admin_key(Path(data), cluster)
            ports = [port + i for i in range(nodes)]
            pids = [node_pid(cluster.pid, p) for p in ports]
            yield [f"http://127.0.0.1:{p}" for p in ports], pids, key
        finally:
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(timeout=60)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def _drain(url: str, stop: asyncio.Event) -> None:
    """An idle client that reads and drops every frame."""
    async with connect(url, max_size=None, compression=None) as ws:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await ws.recv(decode=False)


async def _timed(url: str, idle: int, done: Any, ready: Any, out: Any) -> None:
    stop = asyncio.Event()
    drains = [asyncio.create_task(_drain(url, stop)) for _ in range(idle)]
    lags: list[float] = []
    got: set[tuple[str, int]] = set()
    frames = 0
    async with connect(url, max_size=None, compression=None) as ws:
        json.loads(await ws.recv())  # snapshot
        ready.set()
        while not done.is_set():
            try:
                async with asyncio.timeout(1):
                    raw = await ws.recv()
            except TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            frames += 1
            for one in message["messages"] if message["type"] == "batch" else [message]:
                if one["type"] == "stock":
                    lags.append(now - datetime.fromisoformat(one["committed_at"]).timestamp())
                    got.add((one["sku"], one["version"]))
    stop.set()
    await asyncio.gather(*drains, return_exceptions=True)
    out.send((lags, sorted(got), frames))


def _client_process(url: str, idle: int, done: Any, ready: Any, out: Any) -> None:
    asyncio.run(_timed(url, idle, done, ready, out))


async def _write(url: str, key: str, skus: list[str], rate: float, seconds: float) -> list[Any]:
    """`rate` adjustments a second, paced, as many in flight as it takes."""
    made: list[Any] = []
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def one(i: int) -> None:
            sku = skus[i % len(skus)]
            response = await http.post(
                f"/products/{sku}/adjustments", json={"delta": 1, "reason": "restock"}
            )
            if response.status_code == 200:
                made.append((sku, response.json()["version"]))

        started = time.monotonic()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        made.append(time.monotonic() - started)
    return made


async def _products(url: str, key: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    skus = [f"PROP-{tag}-{i:03d}" for i in range(count)]
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/ready")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        for sku in skus:
            body = {"sku": sku, "name": sku, "price_cents": 999, "on_hand": 1000}
            (await http.post("/products", json=body)).raise_for_status()
    return skus


def run(args: argparse.Namespace, urls: list[str], pids: list[int], key: str) -> None:
    skus = asyncio.run(_products(urls[0], key, args.products))
    time.sleep(1)
    context = multiprocessing.get_context("spawn")
    done = context.Event()  # the writer is through: the readers stop a moment later
    readers = []
    for url in urls:
        ready, (receive, send) = context.Event(), context.Pipe(duplex=False)
        ws = url.replace("http://", "ws://") + "/ws"
        process = context.Process(
            target=_client_process, args=(ws, args.clients - 1, done, ready, send)
        )
        process.start()
        readers.append((process, ready, receive))
    for _, ready, _ in readers:
        ready.wait(120)
    time.sleep(2)
    nodes = [psutil.Process(pid) for pid in pids]
    cpu = [sum(node.cpu_times()[:2]) for node in nodes]
    spy = None
    if args.profile:
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        spy = subprocess.Popen(
            [py_spy, "record", "-p", str(pids[-1]), "-o", args.profile, "-r", "200",
             "-d", str(int(args.seconds)), "--nonblocking", "--format", "raw"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    made = asyncio.run(_write(urls[0], key, skus, args.rate, args.seconds))
    elapsed = made.pop()
    cpu = [sum(node.cpu_times()[:2]) - before for node, before in zip(nodes, cpu, strict=True)]
    time.sleep(3)
    done.set()
    if spy is not None:
        spy.wait()
    written = set(made)
    print(
        f"{len(urls)} nodes x {args.clients} clients; {len(written)} changes written "
        f"in {elapsed:.1f} s ({len(written) / elapsed:.0f}/s, aimed at {args.rate:g}/s)"
    )
    for i, (process, _, receive) in enumerate(readers):
        lags, got, frames = receive.recv()
        process.join()
        ms = [lag * 1000 for lag in lags]
        missed = len(written - {tuple(item) for item in got})
        print(
            f"  node-{i + 1}: p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
            f"{len(ms)} changes in {frames} frames, {missed} missed, "
            f"node CPU {cpu[i]:.1f} s ({cpu[i] / elapsed:.0%})"
        )
    if args.profile:
        print(f"  profile of node-{len(urls)}: {args.profile}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients per node")
    parser.add_argument("--rate", type=float, default=500, help="changes a second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--profile", help="py-spy collapsed stacks of the last node (a path)")
    args = parser.parse_args()
    with own_cluster(args.nodes) as (urls, pids, key):
        run(args, urls, pids, key)


if __name__ == "__main__":
    main()
