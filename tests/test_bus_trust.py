"""Nodes believe only each other: a message without the nodes' seal changes nothing."""

import json
from collections.abc import Callable

import pytest
import redis.asyncio as redis

from backend.bus import CHANNEL
from backend.embedded import EmbeddedRedis
from backend.seal import seal, unseal
from tests.support import eventually, node_settings, run_node

KEY = b"test-bus-key"


def test_a_sealed_message_is_one_json_object_that_opens_with_its_key() -> None:
    text = json.dumps({"sku": "A", "version": 2}, separators=(",", ":"))
    sealed = seal(text, KEY)
    assert json.loads(sealed)["sku"] == "A"
    assert unseal(sealed.encode(), KEY) == text.encode()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda sealed: sealed.replace('"version":2', '"version":9'),  # altered
        lambda sealed: seal('{"sku":"A","version":2}', b"other-key"),  # another key
        lambda sealed: '{"sku":"A","version":2}',  # unsigned
        lambda sealed: sealed[:-3] + ("1" if sealed[-3] == "0" else "0") + '"}',  # a wrong seal
        lambda sealed: "",
        lambda sealed: '"sig"}',
    ],
)
def test_a_forged_altered_or_unsigned_message_does_not_open(
    tamper: Callable[[str], str],
) -> None:
    sealed = seal('{"sku":"A","version":2}', KEY)
    assert unseal(tamper(sealed).encode(), KEY) is None


async def test_forged_and_unsigned_messages_change_no_node(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    settings = node_settings(database_url, redis_url=redis_server.url, bus_key="node-key")
    async with run_node(settings) as node:
        body = {"sku": "TRUST-1", "name": "Trust", "price_cents": 1, "on_hand": 5}
        product = (await node.client.post("/products", json=body)).json()
        bus = node.state["bus"]
        assert bus is not None
        await eventually(lambda: bus.stats.subscribed, 10, "the node subscribed")
        forged = {
            **product,
            "product_id": product["id"],
            "on_hand": 0,
            "reserved": 0,
            "available": 0,
            "delta_on_hand": -5,
            "delta_reserved": 0,
            "version": 999_999_999,
            "seq": 1,
            "reason": "count",
            "order_id": None,
            "node": "attacker",
            "committed_at": product["updated_at"],
            "deleted": False,
        }
        text = json.dumps(forged, separators=(",", ":"))
        client = redis.Redis.from_url(redis_server.url)
        try:
            await client.publish(CHANNEL, text)  # unsigned
            await client.publish(CHANNEL, seal(text, b"a-guessed-key"))  # forged
            await eventually(lambda: bus.stats.rejected == 2, 5, "both messages rejected")
        finally:
            await client.aclose()
        held = (await node.client.get("/products/TRUST-1")).json()
        assert (held["version"], held["on_hand"]) == (1, 5)
        # The node still takes genuine changes.
        change = await node.client.post(
            "/products/TRUST-1/adjustments", json={"delta": 1, "reason": "restock"}
        )
        assert change.json()["version"] == 2
        metrics = (await node.client.get("/metrics")).text
        assert "orderflow_bus_rejected_total 2.0" in metrics


async def test_a_replayed_genuine_message_changes_nothing(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    settings = node_settings(database_url, redis_url=redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        async with run_node(settings) as node:
            body = {"sku": "REPLAY-1", "name": "Replay", "price_cents": 1, "on_hand": 5}
            assert (await node.client.post("/products", json=body)).status_code == 201
            captured = None
            while captured is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None and json.loads(message["data"])["sku"] == "REPLAY-1":
                    captured = message["data"]
            later = {"delta": 2, "reason": "restock"}
            assert (await node.client.post("/products/REPLAY-1/adjustments", json=later)).is_success
            stale = node.state["metrics"].changes.labels("bus", "stale")
            before = stale._value.get()
            await client.publish(CHANNEL, captured)  # version 1 again, properly sealed
            await eventually(lambda: stale._value.get() > before, 5, "the replay was seen")
            held = (await node.client.get("/products/REPLAY-1")).json()
            assert (held["version"], held["on_hand"]) == (2, 7)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
