"""WebSocket clients that keep their own picture of the catalog, as the dashboard does.

A snapshot replaces the whole picture; a `stock` message is taken if it is newer
(higher product id, then higher version), a deleted one leaves a tombstone so
late news cannot revive it. A `reconnect` message or a closed socket means: connect
again, follow the same orders again, start from a fresh snapshot.
"""

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tools.chaos.cluster import NodeProcess
from tools.chaos.model import FINAL_STATUSES, ProductState, Records, Sighting, View

MAX_FOLLOWED = 40
_REFOLLOW_EVERY = 1.0  # seconds between re-sending follows after an `error` message


class LiveClient:
    def __init__(
        self, name: str, node: NodeProcess, records: Records, headers: dict[str, str]
    ) -> None:
        self.name = name
        self.headers = headers
        self.node = node
        self.records = records
        self.products: dict[str, ProductState] = {}
        self.gone: dict[str, tuple[int, int]] = {}  # sku -> (product id, version) deleted
        self.followed: dict[str, str] = {}  # order id -> last status seen ("" before any)
        self.connects = 0
        self.snapshots = 0
        self.errors: Counter[str] = Counter()  # `error` messages, by code
        self._socket: ClientConnection | None = None
        self._refollow_at: float | None = None

    def view(self) -> View:
        return View(self.name, dict(self.products), dict(self.followed))

    async def follow(self, order_id: str) -> None:
        """Ask for this order's status changes, now and after every reconnect."""
        if order_id in self.followed or len(self.followed) >= MAX_FOLLOWED:
            return
        self.followed[order_id] = ""
        await self._send({"type": "follow", "order_id": order_id})

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                async with connect(
                    self.node.ws_url, open_timeout=3, close_timeout=1, ping_interval=None,
                    proxy=None, max_size=2**24, additional_headers=self.headers,
                ) as socket:  # fmt: skip
                    self._socket, delay = socket, 0.1
                    self.connects += 1
                    for order_id in list(self.followed):
                        await socket.send(json.dumps({"type": "follow", "order_id": order_id}))
                    await self._receive(socket, stop)
            except (OSError, TimeoutError, WebSocketException):
                pass
            finally:
                self._socket = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(1.0, delay * 2)

    async def _receive(self, socket: ClientConnection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), 0.5))
            except TimeoutError:
                message = {}
            if message.get("type") == "reconnect":
                return
            self.take(message)
            await self._refollow()

    def take(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "batch":  # several messages that were ready together, in order
            for each in message["messages"]:
                self.take(each)
        elif kind == "snapshot":
            self.snapshots += 1
            self.gone.clear()
            self.products = {p["sku"]: _state(p, p["id"]) for p in message["products"]}
        elif kind == "stock":
            self._apply(message)
        elif kind == "order":
            order = message["order"]
            self.followed[str(order["id"])] = str(order["status"])
            self.records.sightings.append(Sighting(str(order["id"]), order["status"], self.name))
        elif kind == "error":
            self.errors[str(message.get("code"))] += 1
            self._refollow_at = self._refollow_at or time.monotonic() + _REFOLLOW_EVERY

    def _apply(self, change: dict[str, Any]) -> None:
        sku, stamp = change["sku"], (change["product_id"], change["version"])
        held = self.products.get(sku)
        current = held[:2] if held else self.gone.get(sku)
        if current is not None and stamp <= current:
            return
        if change["deleted"]:
            self.products.pop(sku, None)
            self.gone[sku] = stamp
        else:
            self.gone.pop(sku, None)
            self.products[sku] = _state(change, change["product_id"])

    async def _refollow(self) -> None:
        """A follow refused (say, the database was down) is asked again, once a second."""
        if self._refollow_at is None or time.monotonic() < self._refollow_at:
            return
        self._refollow_at = None
        for order_id, status in list(self.followed.items()):
            if status not in FINAL_STATUSES:
                await self._send({"type": "follow", "order_id": order_id})

    async def _send(self, message: dict[str, Any]) -> None:
        """Send if connected; a reconnect sends the follows again anyway."""
        if self._socket is not None:
            with contextlib.suppress(OSError, TimeoutError, WebSocketException):
                await asyncio.wait_for(self._socket.send(json.dumps(message)), 2.0)


def _state(product: dict[str, Any], product_id: int) -> ProductState:
    return (product_id, product["version"], product["on_hand"], product["reserved"])
