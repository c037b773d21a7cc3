"""The chaos run's WebSocket client reads every message the protocol has."""

from pathlib import Path

from tests.support import change
from tools.chaos.cluster import NodeProcess
from tools.chaos.live import LiveClient
from tools.chaos.model import Records


def client() -> LiveClient:
    node = NodeProcess("node-1", 1, Path("node.log"), {}, Path("."))
    return LiveClient("ws-node-1-1", node, Records(origin=0.0), {})


def test_a_batch_is_taken_as_its_messages_in_order() -> None:
    live = client()
    first = {"type": "stock", **change("A", version=2, on_hand=5)}
    second = {"type": "stock", **change("A", version=3, on_hand=4)}
    other = {"type": "stock", **change("B", version=2, on_hand=9)}

    live.take({"type": "batch", "messages": [first, second, other]})

    assert live.view().products == {"A": (1, 3, 4, 0), "B": (1, 2, 9, 0)}
