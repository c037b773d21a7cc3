"""What a chaos run observes, as plain values: client operations and their attempts,
order statuses seen, fault windows, views of the catalog and the database's rows.

The verdict (`check`) is pure functions over these, so it is tested with
planted violations and no servers at all.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

Json = dict[str, Any]
Outcome = Literal["acked", "refused", "unknown"]

# A product as a view holds it: (product id, version, on_hand, reserved).
ProductState = tuple[int, int, int, int]

FINAL_STATUSES = ("confirmed", "cancelled", "expired")
NOT_SENT = ("refused", "unreachable")


@dataclass
class Attempt:
    """One HTTP request of an operation, on one node."""

    node: str
    started: float  # time.monotonic()
    ended: float
    status: int | None = None  # None: no response came back
    # When no response came back: refused or unreachable (connecting failed: never sent),
    # timeout or disconnected (sent, maybe taken).
    error: str | None = None
    code: str | None = None  # the machine code of an error body
    body: Json | None = None  # the body of a 2xx answer
    request_id: str = ""

    @property
    def ambiguous(self) -> bool:
        """The request may have taken effect although no success came back."""
        if self.status is None:
            return self.error not in NOT_SENT
        return self.status >= 500

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Operation:
    """One thing a client set out to do, with every attempt it took."""

    kind: str  # order, confirm, cancel, adjust, set_stock, create, delete, drain
    target: str  # the SKU, or the order id
    request: Json
    key: str | None = None  # the Idempotency-Key of an order
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome = "unknown"

    @property
    def result(self) -> Json | None:
        """The body of the last successful attempt."""
        for attempt in reversed(self.attempts):
            if attempt.ok:
                return attempt.body
        return None

    def settle(self) -> None:
        """acked on a success; refused on a definite answer no ambiguous attempt preceded."""
        last = self.attempts[-1] if self.attempts else None
        if last is not None and last.ok:
            self.outcome = "acked"
        elif (
            last is not None
            and last.status is not None
            and 400 <= last.status < 500
            and not any(attempt.ambiguous for attempt in self.attempts)
        ):
            self.outcome = "refused"
        else:
            self.outcome = "unknown"


@dataclass(frozen=True)
class Sighting:
    """A client saw an order in this status (an HTTP answer or a WebSocket `order`)."""

    order_id: str
    status: str
    source: str


@dataclass(frozen=True)
class FaultWindow:
    """From the moment a fault hit until everything was back and every node ready."""

    kind: str
    target: str
    started: float
    ended: float
    detail: str = ""

    def overlaps(self, started: float, ended: float) -> bool:
        return started <= self.ended and ended >= self.started


@dataclass(frozen=True)
class View:
    """A node's cache or a WebSocket client's picture of the catalog at one moment."""

    name: str
    products: dict[str, ProductState]
    followed: dict[str, str] | None = None  # a WebSocket client's: order id -> last status seen


@dataclass(frozen=True)
class Convergence:
    """How long after the load stopped one aspect of a view first equalled the database
    (None: never): its `catalog`, or the statuses of the orders a client `follows`."""

    name: str
    aspect: str
    seconds: float | None
    diff: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProductRow:
    id: int
    sku: str
    on_hand: int
    reserved: int
    version: int
    deleted: bool


@dataclass(frozen=True)
class EventRow:
    seq: int
    product_id: int
    sku: str
    delta_on_hand: int
    delta_reserved: int
    on_hand: int
    reserved: int
    version: int
    reason: str
    order_id: str | None


@dataclass(frozen=True)
class OrderRow:
    id: str
    status: str
    key: str | None
    lines: tuple[tuple[int, int], ...]  # (product id, quantity), one per order line


@dataclass(frozen=True)
class DbState:
    products: tuple[ProductRow, ...]
    events: tuple[EventRow, ...]
    orders: tuple[OrderRow, ...]

    def live(self) -> dict[str, ProductState]:
        """What every view must converge to: the live products by SKU."""
        return {
            p.sku: (p.id, p.version, p.on_hand, p.reserved) for p in self.products if not p.deleted
        }


@dataclass(frozen=True)
class Violation:
    category: str  # ledger, version, oversell, lost, duplicated, phantom, status, divergent, ...
    message: str
    evidence: tuple[str, ...] = ()


@dataclass
class Records:
    """Everything the clients and the fault injector wrote down during one run."""

    origin: float  # time.monotonic() when the load started: report times are relative to it
    operations: list[Operation] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)
    windows: list[FaultWindow] = field(default_factory=list)
    incidents: list[Violation] = field(default_factory=list)  # nodes that died or never got ready
    marks: dict[str, float] = field(default_factory=dict)  # phase -> time.monotonic() it ended
    planned: int = 0  # faults in the schedule: when `windows` has them all, they are over

    @property
    def last_fault_end(self) -> float | None:
        return max((window.ended for window in self.windows), default=None)
