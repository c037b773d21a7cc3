"""The mixed load: orders, confirms, cancels, adjustments, compare-and-set, product churn.

Workers share what they believe (which orders are pending, which churned SKUs
exist); a belief may be wrong after a fault, which is fine: the node refuses
and the refusal is recorded. Each worker has its own seeded random stream.
"""

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tools.chaos.api import Api, retry_if_unsent
from tools.chaos.live import LiveClient
from tools.chaos.model import Operation

STABLE_SKUS = [f"CH-{i:02d}" for i in range(12)]
CHURN_SKUS = [f"CX-{i}" for i in range(5)]
WEIGHTS = {
    "order": 34,
    "confirm": 14,
    "cancel": 8,
    "adjust": 16,
    "set_stock": 10,
    "churn": 8,
    "read": 10,
}
ADJUSTMENTS = {"restock": (1, 8), "return": (1, 2), "damage": (-2, -1), "count": (-3, -1)}


@dataclass
class Beliefs:
    pending: list[str] = field(default_factory=list)  # order ids last seen pending
    churn_live: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CHURN_SKUS, False))


class Load:
    def __init__(self, api: Api, followers: list[LiveClient], seed: int) -> None:
        self.api = api
        self.followers = followers
        self.seed = seed
        self.beliefs = Beliefs()

    async def setup(self) -> None:
        """The catalog every run starts from: stable SKUs with plenty of stock."""
        rng = random.Random(self.seed)
        for sku in STABLE_SKUS:
            body = {"sku": sku, "name": f"Chaos {sku}", "price_cents": 250, "on_hand": 300}
            await self.api.perform(Operation("create", sku, body), "POST", "/products", rng)

    async def run(self, workers: int, going: Callable[[], bool]) -> None:
        """Run `workers` clients for as long as `going()` says."""
        await asyncio.gather(*(self._worker(i, going) for i in range(workers)))

    async def _worker(self, index: int, going: Callable[[], bool]) -> None:
        rng = random.Random(f"{self.seed}:{index}")
        actions = {
            "order": self.place_order,
            "confirm": self.confirm,
            "cancel": self.cancel,
            "adjust": self.adjust,
            "set_stock": self.set_stock,
            "churn": self.churn,
            "read": self.read,
        }
        while going():
            (kind,) = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))
            await actions[kind](rng)
            await asyncio.sleep(rng.uniform(0.01, 0.06))

    def _some_skus(self, rng: random.Random) -> list[str]:
        skus = rng.sample(STABLE_SKUS, rng.randint(1, 3))
        if rng.random() < 0.08:
            skus.append(rng.choice(CHURN_SKUS))
        return skus

    async def place_order(self, rng: random.Random) -> None:
        items = [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in self._some_skus(rng)]
        key = uuid.uuid4().hex
        body = {"items": items, "customer_id": f"chaos-{rng.randint(1, 20)}"}
        op = Operation("order", key, body, key=key)
        await self.api.perform(op, "POST", "/orders", rng, headers={"Idempotency-Key": key})
        if op.outcome == "acked" and op.result is not None:
            order_id = str(op.result["id"])
            self.beliefs.pending.append(order_id)
            if self.followers and rng.random() < 0.3:
                await rng.choice(self.followers).follow(order_id)

    async def confirm(self, rng: random.Random) -> None:
        await self._settle(rng, "confirm")

    async def cancel(self, rng: random.Random) -> None:
        await self._settle(rng, "cancel")

    async def _settle(self, rng: random.Random, kind: str) -> None:
        pending = self.beliefs.pending
        if not pending:
            return
        order_id = pending.pop(rng.randrange(len(pending)))
        await self.api.perform(
            Operation(kind, order_id, {}), "POST", f"/orders/{order_id}/{kind}", rng
        )

    async def adjust(self, rng: random.Random) -> None:
        reason = rng.choice(list(ADJUSTMENTS))
        delta = rng.randint(*ADJUSTMENTS[reason])
        sku = rng.choice(STABLE_SKUS + CHURN_SKUS)
        body = {"delta": delta, "reason": reason}
        op = Operation("adjust", sku, body)
        await self.api.perform(op, "POST", f"/products/{sku}/adjustments", rng, retry_if_unsent)

    async def set_stock(self, rng: random.Random) -> None:
        """Read the product from a node's cache, then set it only if it has not moved since."""
        sku = rng.choice(STABLE_SKUS)
        read = await self.api.perform(Operation("read", sku, {}), "GET", f"/products/{sku}", rng)
        product = read.result
        if product is None:
            return
        on_hand = max(0, int(product["on_hand"]) + rng.randint(-6, 12))
        body = {"on_hand": on_hand, "expected_version": int(product["version"])}
        await self.api.perform(
            Operation("set_stock", sku, body), "PUT", f"/products/{sku}/stock", rng
        )

    async def churn(self, rng: random.Random) -> None:
        """Create a churned SKU, or delete it: a SKU comes back as a new product."""
        sku = rng.choice(CHURN_SKUS)
        live = self.beliefs.churn_live
        if live[sku]:
            op = await self.api.perform(
                Operation("delete", sku, {}), "DELETE", f"/products/{sku}", rng
            )
            live[sku] = not (op.outcome == "acked" or op.attempts[-1].code == "NOT_FOUND")
        else:
            body = {"sku": sku, "name": f"Churn {sku}", "price_cents": 100, "on_hand": 40}
            op = await self.api.perform(Operation("create", sku, body), "POST", "/products", rng)
            live[sku] = op.outcome == "acked" or op.attempts[-1].code == "SKU_EXISTS"

    async def read(self, rng: random.Random) -> None:
        path = f"/products?limit={rng.choice([5, 100])}"
        await self.api.perform(Operation("read", "catalog", {}), "GET", path, rng)

    async def drain(self, order_ids: list[str]) -> None:
        """Cancel what is still pending, so the database holds still while views converge."""
        rng = random.Random(f"{self.seed}:drain")
        queue = list(order_ids)

        async def canceller() -> None:
            while queue:
                order_id = queue.pop()
                op = Operation("drain", order_id, {})
                await self.api.perform(op, "POST", f"/orders/{order_id}/cancel", rng)

        await asyncio.gather(*(canceller() for _ in range(4)))
