"""The chaos verdict on planted violations: each is reported, a clean run passes."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tools.chaos.check import check_convergence, compare_catalog, compare_followed, verdict
from tools.chaos.model import (
    Attempt,
    Convergence,
    DbState,
    EventRow,
    FaultWindow,
    Operation,
    OrderRow,
    ProductRow,
    Records,
    Sighting,
    View,
)

ORDER_1 = "00000000-0000-0000-0000-000000000001"
ORDER_2 = "00000000-0000-0000-0000-000000000002"


@dataclass
class World:
    """A small run that kept every promise; tests plant one violation each."""

    products: list[ProductRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    orders: list[OrderRow] = field(default_factory=list)
    records: Records = field(default_factory=lambda: Records(origin=0.0))
    views: list[Convergence] = field(default_factory=list)

    def product(
        self, product_id: int, sku: str, changes: list[tuple[int, int, str, str | None]]
    ) -> None:
        """A product and its ledger rows: (delta_on_hand, delta_reserved, reason, order id)."""
        on_hand = reserved = 0
        for version, (d_on_hand, d_reserved, reason, order_id) in enumerate(changes, start=1):
            on_hand, reserved = on_hand + d_on_hand, reserved + d_reserved
            seq = len(self.events) + 1
            self.events.append(
                EventRow(
                    seq,
                    product_id,
                    sku,
                    d_on_hand,
                    d_reserved,
                    on_hand,
                    reserved,
                    version,
                    reason,
                    order_id,
                )
            )
        self.products.append(ProductRow(product_id, sku, on_hand, reserved, len(changes), False))

    def op(
        self,
        kind: str,
        target: str,
        request: dict[str, object],
        *attempts: Attempt,
        key: str | None = None,
    ) -> Operation:
        operation = Operation(kind, target, request, key=key, attempts=list(attempts))
        operation.settle()
        self.records.operations.append(operation)
        return operation

    @property
    def db(self) -> DbState:
        return DbState(tuple(self.products), tuple(self.events), tuple(self.orders))

    def replace_product(self, sku: str, **changes: Any) -> None:
        self.products = [
            dataclasses.replace(p, **changes) if p.sku == sku else p for p in self.products
        ]

    def verdict(self) -> list[tuple[str, str]]:
        return [(v.category, v.message) for v in verdict(self.records, self.db, self.views, 2.0)]


def answered(
    status: int,
    body: dict[str, object] | None = None,
    code: str | None = None,
    node: str = "node-1",
    at: float = 1.0,
) -> Attempt:
    return Attempt(node, at, at + 0.01, status=status, body=body, code=code, request_id=f"r{at}")


def unanswered(error: str, node: str = "node-2", at: float = 1.0) -> Attempt:
    return Attempt(node, at, at + 0.01, error=error)


@pytest.fixture
def world() -> World:
    w = World()
    plant_rows(w)
    plant_records(w)
    return w


def plant_rows(w: World) -> None:
    # A: created with 10, order 1 reserves 2, restock +5, order 1 confirmed (sold).
    w.product(
        1,
        "A",
        [
            (10, 0, "created", None),
            (0, 2, "reserved", ORDER_1),
            (5, 0, "restock", None),
            (-2, -2, "sold", ORDER_1),
        ],
    )
    # B: created with 5, order 2 reserves 1 and stays pending, set to 7.
    w.product(2, "B", [(5, 0, "created", None), (0, 1, "reserved", ORDER_2), (2, 0, "set", None)])
    w.orders = [
        OrderRow(ORDER_1, "confirmed", "k1", ((1, 2),)),
        OrderRow(ORDER_2, "pending", "k2", ((2, 1),)),
    ]


def plant_records(w: World) -> None:
    """What the clients were told, and saw, in the world of `plant_rows`."""
    w.op("create", "A", {"sku": "A"}, answered(201, {"id": 1}))
    w.op("create", "B", {"sku": "B"}, answered(201, {"id": 2}))
    # Order 1 timed out once, then its retry with the same key was answered.
    w.op(
        "order",
        "k1",
        {"items": []},
        unanswered("timeout"),
        answered(201, {"id": ORDER_1, "status": "pending"}),
        key="k1",
    )
    w.op(
        "order", "k2", {"items": []}, answered(201, {"id": ORDER_2, "status": "pending"}), key="k2"
    )
    w.op("order", "k3", {"items": []}, answered(409, code="OUT_OF_STOCK"), key="k3")
    w.op("confirm", ORDER_1, {}, answered(200, {"id": ORDER_1, "status": "confirmed"}))
    w.op(
        "adjust", "A", {"delta": 5, "reason": "restock"}, answered(200, {"seq": 3, "product_id": 1})
    )
    w.op(
        "set_stock",
        "B",
        {"on_hand": 7, "expected_version": 2},
        answered(200, {"seq": 7, "product_id": 2}),
    )
    w.records.sightings.append(Sighting(ORDER_2, "pending", "ws-node-2-1"))
    w.views = [Convergence("node-1", "catalog", 0.01), Convergence("ws-node-2-1", "follows", 0.02)]


def test_a_run_that_kept_every_promise_passes(world: World) -> None:
    assert world.verdict() == []


def lose_an_order(w: World) -> None:
    w.orders = [order for order in w.orders if order.id != ORDER_1]


def duplicate_an_adjustment(w: World) -> None:
    w.events.append(EventRow(8, 1, "A", 5, 0, 18, 0, 5, "restock", None))
    w.replace_product("A", on_hand=18, version=5)


def drift_a_product_from_its_ledger(w: World) -> None:
    w.replace_product("A", on_hand=14)


def skip_a_version(w: World) -> None:
    w.events = [dataclasses.replace(e, version=4) if e.seq == 7 else e for e in w.events]
    w.replace_product("B", version=4)


def repeat_a_version(w: World) -> None:
    w.events = [dataclasses.replace(e, version=2) if e.seq == 3 else e for e in w.events]


def answer_500(w: World) -> None:
    w.op("read", "catalog", {}, answered(500, code="INTERNAL", at=5.0))


def answer_503_with_no_fault_on(w: World) -> None:
    w.records.windows.append(FaultWindow("postgres_restart", "postgres", 1.0, 2.0))
    w.op("read", "catalog", {}, answered(503, code="DATABASE_UNAVAILABLE", at=3.0))


def refuse_outside_a_kill(w: World) -> None:
    w.records.windows.append(FaultWindow("node_kill", "node-1", 1.0, 2.0))
    w.op("read", "catalog", {}, unanswered("refused", node="node-2", at=1.5))


def diverge_a_cache(w: World) -> None:
    view = View("node-2", {"A": (1, 3, 15, 2), "B": (2, 3, 7, 1)})
    w.views.append(Convergence("node-2", "catalog", None, tuple(compare_catalog(view, w.db))))


def converge_too_slowly(w: World) -> None:
    w.views.append(Convergence("ws-node-3-1", "catalog", 2.5))


def leave_a_follower_behind(w: World) -> None:
    view = View("ws-node-1-1", {}, {ORDER_1: "pending"})
    w.views.append(Convergence("ws-node-1-1", "follows", None, tuple(compare_followed(view, w.db))))


def answer_a_retry_with_another_order(w: World) -> None:
    op = next(op for op in w.records.operations if op.key == "k2")
    op.attempts.append(answered(201, {"id": ORDER_1, "status": "pending"}, at=2.0))


def change_a_final_status(w: World) -> None:
    w.orders = [
        dataclasses.replace(o, status="cancelled") if o.id == ORDER_1 else o for o in w.orders
    ]
    w.events = [
        dataclasses.replace(e, reason="released", delta_on_hand=0, on_hand=15) if e.seq == 4 else e
        for e in w.events
    ]
    w.replace_product("A", on_hand=15)


def invent_an_order(w: World) -> None:
    w.orders.append(OrderRow("00000000-0000-0000-0000-000000000009", "expired", "nobody", ()))


def settle_an_order_twice(w: World) -> None:
    w.events.append(EventRow(8, 1, "A", -2, -2, 11, -2, 5, "sold", ORDER_1))
    w.replace_product("A", on_hand=11, reserved=-2, version=5)


def lose_an_acknowledged_set(w: World) -> None:
    w.events = [dataclasses.replace(e, reason="count") if e.seq == 7 else e for e in w.events]


def hold_units_no_order_holds(w: World) -> None:
    w.orders = [
        dataclasses.replace(o, status="expired") if o.id == ORDER_2 else o for o in w.orders
    ]


@pytest.mark.parametrize(
    ("plant", "category"),
    [
        (lose_an_order, "lost"),
        (duplicate_an_adjustment, "duplicated"),
        (drift_a_product_from_its_ledger, "ledger"),
        (skip_a_version, "version"),
        (repeat_a_version, "version"),
        (answer_500, "http"),
        (answer_503_with_no_fault_on, "http"),
        (refuse_outside_a_kill, "http"),
        (diverge_a_cache, "divergent"),
        (converge_too_slowly, "divergent"),
        (leave_a_follower_behind, "followers"),
        (answer_a_retry_with_another_order, "duplicated"),
        (change_a_final_status, "status"),
        (invent_an_order, "phantom"),
        (settle_an_order_twice, "duplicated"),
        (settle_an_order_twice, "oversell"),
        (lose_an_acknowledged_set, "lost"),
        (hold_units_no_order_holds, "ledger"),
    ],
)
def test_a_planted_violation_is_reported(
    world: World, plant: Callable[[World], None], category: str
) -> None:
    plant(world)
    assert category in {found for found, _ in world.verdict()}, world.verdict()


def test_503_and_refusals_during_their_fault_are_allowed(world: World) -> None:
    world.records.windows.append(FaultWindow("node_kill", "node-2", 1.0, 2.0))
    world.records.windows.append(FaultWindow("postgres_restart", "postgres", 3.0, 4.0))
    world.op("read", "catalog", {}, unanswered("refused", node="node-2", at=1.5))
    world.op("read", "catalog", {}, answered(503, code="DATABASE_UNAVAILABLE", at=3.5))
    assert world.verdict() == []


def test_an_unanswered_adjustment_may_or_may_not_have_landed(world: World) -> None:
    world.op("adjust", "A", {"delta": 5, "reason": "restock"}, unanswered("timeout", at=5.0))
    duplicate_an_adjustment(world)
    assert world.verdict() == []


def test_a_diverging_view_names_each_difference(world: World) -> None:
    world.replace_product("B", deleted=True)
    view = View("node-3", {"A": (1, 3, 15, 2), "B": (2, 3, 7, 1), "C": (9, 1, 1, 0)})
    assert compare_catalog(view, world.db) == [
        "A: view (1, 3, 15, 2), database (1, 4, 13, 0)",
        "B: view (2, 3, 7, 1), database absent",
        "C: view (9, 1, 1, 0), database absent",
    ]
    assert check_convergence([Convergence("node-3", "catalog", 0.5)], 2.0) == []
