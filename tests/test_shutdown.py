"""SIGTERM: a node stops being ready, sends its WebSocket clients elsewhere, finishes the
request in flight and publishes its change before it exits. A real uvicorn process."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from backend.bus import CHANNEL
from backend.embedded import EmbeddedRedis, free_port
from tests.support import ADMIN, BUS_KEY, ISSUER, JWT_SECRET, until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def node_process(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], httpx.AsyncClient, int]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "NODE_ID": "node-stop",
        "SHUTDOWN_DELAY_SECONDS": "1",
        "BUS_KEY": BUS_KEY,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "AUTH_ISSUER": ISSUER,
    }
    log = (tmp_path / "node.log").open("wb")
    command = [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port)]
    process = await asyncio.to_thread(
        subprocess.Popen, command, cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=10) as client:

            async def is_ready() -> bool:
                try:
                    return (await client.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(is_ready, 30, "the node is ready")
            yield process, client, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


async def test_sigterm_drains_before_the_node_exits(
    node_process: tuple[subprocess.Popen[bytes], httpx.AsyncClient, int],
    database_url: str,
    redis_server: EmbeddedRedis,
) -> None:
    process, client, port = node_process
    body = {"sku": "STOP-1", "name": "Stop", "price_cents": 1, "on_hand": 5}
    assert (await client.post("/products", json=body)).status_code == 201

    bus = redis.Redis.from_url(redis_server.url)
    pubsub = bus.pubsub()
    await pubsub.subscribe(CHANNEL)
    blocker = await asyncpg.connect(database_url)
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
            # A write held in flight: another transaction holds the product's row lock.
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("select 1 from products where sku = 'STOP-1' for update")
            write = asyncio.create_task(
                client.post("/products/STOP-1/adjustments", json={"delta": 2, "reason": "restock"})
            )
            await asyncio.sleep(0.3)  # the request reaches the node and waits on the lock
            assert not write.done()

            process.send_signal(signal.SIGTERM)

            async def not_ready() -> bool:
                response = await client.get("/ready")
                return response.status_code == 503 and "shutting down" in response.text

            await until(not_ready, 5, "/ready fails once the node is stopping")

            messages = []
            async with asyncio.timeout(10):
                with contextlib.suppress(ConnectionClosed):  # 1012 is not a normal closure
                    async for message in ws:
                        messages.append(json.loads(message))
            assert messages[-1] == {"type": "reconnect", "reason": "shutdown"}
            assert ws.close_code == 1012

            await lock.commit()  # the write finishes after the node started stopping
            response = await write
            assert response.status_code == 200, response.text
            seq = response.json()["seq"]

        async with asyncio.timeout(10):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None and json.loads(message["data"])["seq"] == seq:
                    break
        await asyncio.to_thread(process.wait, 15)
        assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    finally:
        await blocker.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await bus.aclose()
